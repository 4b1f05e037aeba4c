"""A model's build config: attached to the model, carried through clones, saved in its `.keras`.

`build_model` attaches the config it built from (`config_of(model)`); `quantize_model` and the
BSQ conversions `carry` it to the model they clone; `save_model` writes it as the archive
member `quadkeras_config.json` next to Keras' own `config.json`, and `load_model` attaches it
again, so any `.keras` quadkeras writes says which config rebuilds it (Keras ignores members
it does not know). `normalizes_input` says whether a model standardises its own input (a
config with `normalize:` adds a `keras.layers.Normalization`): its data must then be fed
scaled to [0, 1] only, never normalised a second time.

Example:

>>> import os, tempfile
>>> from quadkeras.models import build_model
>>> model = build_model("qresnet14", num_classes=10, input_shape=(16, 16, 3))
>>> path = save_model(model, os.path.join(tempfile.mkdtemp(), "m.keras"))
>>> saved_config(path)["num_classes"], config_of(load_model(path))["family"]
(10, 'resnet')
>>> normalizes_input(model)
False
"""

import json
import zipfile

ATTRIBUTE = "quadkeras_config"
ENTRY = "quadkeras_config.json"


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


def normalizes_input(model):
    """Whether `model` standardises its own input (a `keras.layers.Normalization` layer)."""
    import keras  # noqa: PLC0415

    config = config_of(model)
    if config is not None and config.get("normalize"):
        return True
    return any(isinstance(layer, keras.layers.Normalization) for layer in model.layers)


def saved_config(path):
    """The config stored in the `.keras` file at `path`, or None (written elsewhere)."""
    with zipfile.ZipFile(path) as archive:
        if ENTRY not in archive.namelist():
            return None
        return json.loads(archive.read(ENTRY))


def save_model(model, path):
    """`model.save` to `path` atomically, with its config (if any) inside; returns `path`."""
    from quadkeras.utils.safe_io import write_atomic  # noqa: PLC0415

    def write(tmp):
        model.save(tmp)
        config = config_of(model)
        if config is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(ENTRY, json.dumps(config, default=_plain))

    return write_atomic(path, write)


def load_model(path, flag="model", **kwargs):
    """`safe_io.load_keras_model` (one-line errors) with the saved config attached again."""
    from quadkeras.utils.safe_io import load_keras_model  # noqa: PLC0415

    model = load_keras_model(path, flag, **kwargs)
    return attach(model, saved_config(path))


def _plain(value):
    """JSON form of NumPy scalars / tuples a config may hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
