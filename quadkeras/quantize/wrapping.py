"""`wrap_layers`: wrap each layer of a functional model in `QuantizeWrapper` per a scheme.

The per-layer half of `quantize_model` (which also takes the whole-graph presets, e.g.
`int8_all`, built by `quadkeras.quantize.int8_graph` on top of this one). First and last
quantizable layers (model order) and shortcut layers stay float unless the scheme asks
otherwise. Wrapped layers keep their names and weights (the wrapper holds the original
layer object).

Example:

>>> import keras
>>> inp = keras.Input((8, 8, 3))
>>> x = keras.layers.Conv2D(4, 3, name="c1")(inp)
>>> out = keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(keras.layers.Conv2D(4, 3, name="c2")(x)))
>>> q = wrap_layers(keras.Model(inp, out), {"kernel": "lsq:4", "input": "lsq:4"})
>>> [type(l).__name__ for l in q.layers[1:]]
['Conv2D', 'QuantizeWrapper', 'Flatten', 'Dense']
"""

import keras

from quadkeras.backend import keras_private
from quadkeras.quantize.output import QuantizeOutput
from quadkeras.quantize.scheme import plan_layer, resolve_scheme
from quadkeras.quantize.wrapper import QUAD_LAYERS, QuantizeWrapper, is_quantizable
from quadkeras.utils.attached_config import attach, config_of


def wrap_layers(model, scheme):
    """A new functional model whose layers are wrapped per `scheme` (a preset name of
    `quadkeras.quantize.scheme.PRESETS` or a scheme dict); `model`'s layer objects are reused
    and its attached config is carried, with `"quantize": scheme`."""
    given, scheme = scheme, resolve_scheme(scheme)
    candidates = [layer for layer in model.layers if is_quantizable(layer)]
    ends = {id(candidates[0]), id(candidates[-1])} if candidates else set()
    plans = {}
    for layer in candidates:
        plan = plan_layer(scheme, layer, id(layer) in ends)
        if plan is not None:
            plans[id(layer)] = plan
    after_bn = _outputs_after_bn(plans, candidates) if scheme["output_after_bn"] else {}

    def clone(layer):
        if id(layer) in after_bn:
            return QuantizeOutput(layer, output_quantizer=after_bn[id(layer)], name=layer.name)
        plan = plans.get(id(layer))
        if plan is None:
            return layer
        return QuantizeWrapper(layer, kernel_quantizer=plan["kernel"],
                               input_quantizer=plan["input"], output_quantizer=plan["output"],
                               branch_quantizer=plan["branch"], product_quantizer=plan["product"],
                               bias_quantizer=plan["bias"],
                               name=layer.name)

    quantized = keras.models.clone_model(model, clone_function=clone)
    config = config_of(model)
    if config is not None and isinstance(given, (str, dict)):  # the config that rebuilds it
        config = {**config, "quantize": given}
    return attach(quantized, config)


def _outputs_after_bn(plans, candidates):
    """{id(BN): output spec}: move a conv/dense output quantizer past the BN that alone
    consumes its output (plans are edited in place). Quadratic layers keep theirs: their
    product sits between the linear op and the BN, so the BN cannot fold into the conv."""
    moved = {}
    for layer in candidates:
        plan = plans.get(id(layer))
        if plan is None or plan["output"] is None or isinstance(layer, QUAD_LAYERS):
            continue
        consumers = keras_private.consumers(layer)
        if len(consumers) == 1 and isinstance(consumers[0], keras.layers.BatchNormalization):
            moved[id(consumers[0])] = plan["output"]
            plan["output"] = None
    return moved
