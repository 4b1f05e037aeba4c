"""`quantize_model`: rewrite a functional model, wrapping layers per a scheme.

First and last quantizable layers (model order) and shortcut layers stay float unless the
scheme asks otherwise ("real shortcut"). Wrapped layers keep their names and weights (the
wrapper holds the original layer object), so `model.get_layer("conv1").layer` is the float
layer and a trained float model can be fine-tuned quantized.

Example:

>>> import keras
>>> inp = keras.Input((8, 8, 3))
>>> x = keras.layers.Conv2D(4, 3, name="c1")(inp)
>>> x = keras.layers.Conv2D(4, 3, name="c2")(x)
>>> out = keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(x))
>>> q = quantize_model(keras.Model(inp, out), {"kernel": "lsq:4", "input": "lsq:4"})
>>> [type(l).__name__ for l in q.layers[1:]]
['Conv2D', 'QuantizeWrapper', 'Flatten', 'Dense']
"""

import keras

from quadkeras.quantize.scheme import plan_layer, resolve_scheme
from quadkeras.quantize.wrapper import QuantizeWrapper, is_quantizable


def quantize_model(model, scheme):
    """A new functional model whose layers are wrapped in `QuantizeWrapper` per `scheme`.

    Args:
        model: a functional (or Sequential) Keras model; its layer objects are reused.
        scheme: a preset name (`"int8_qat"`), or a scheme dict (see
            `quadkeras.quantize.scheme`), e.g. the output of `scheme_from_flags`.
    """
    scheme = resolve_scheme(scheme)
    candidates = [layer for layer in model.layers if is_quantizable(layer)]
    ends = {id(candidates[0]), id(candidates[-1])} if candidates else set()
    plans = {}
    for layer in candidates:
        plan = plan_layer(scheme, layer, id(layer) in ends)
        if plan is not None:
            plans[id(layer)] = plan

    def clone(layer):
        plan = plans.get(id(layer))
        if plan is None:
            return layer
        return QuantizeWrapper(layer, kernel_quantizer=plan["kernel"],
                               input_quantizer=plan["input"], output_quantizer=plan["output"],
                               name=layer.name)

    quantized = keras.models.clone_model(model, clone_function=clone)
    config = getattr(model, "quadkeras_config", None)
    if config is not None:
        quantized.quadkeras_config = config
    return quantized


def quantized_layers(model):
    """The `QuantizeWrapper` layers of a model, in order."""
    return [layer for layer in model.layers if isinstance(layer, QuantizeWrapper)]
