"""The build config a model carries as an attribute: `attach`, `config_of`, `carry`.

The lowest piece of `quadkeras.models.model_config` (which saves and loads it with the model),
kept here so that code below `models` in the dependency order (`quantize`'s clones) can carry
a config without importing `models`.

Example:

>>> import keras
>>> model = attach(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), {"family": "mlp"})
>>> config_of(model)
{'family': 'mlp'}
>>> clone = carry(model, keras.models.clone_model(model))
>>> config_of(clone)
{'family': 'mlp'}
"""

ATTRIBUTE = "quadkeras_config"


def attach(model, config):
    """Record `config` (a dict, or None to leave the model as it is) on `model`; returns it."""
    if config is not None:
        setattr(model, ATTRIBUTE, config)
    return model


def config_of(model):
    """The config `model` was built from, or None."""
    return getattr(model, ATTRIBUTE, None)


def carry(source, target):
    """`target` with `source`'s config attached (for models cloned from `source`)."""
    return attach(target, config_of(source))
