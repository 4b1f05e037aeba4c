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

from quadkeras.backend import keras_private
from quadkeras.utils.attached_config import attach, config_of
from quadkeras.quantize.output import QuantizeOutput
from quadkeras.quantize.scheme import PRESETS, plan_layer, resolve_scheme, scheme_from_flags
from quadkeras.quantize.wrapper import QUAD_LAYERS, QuantizeWrapper, is_quantizable
from quadkeras.quantizers.hosting import QuantizerHost


# Presets that transform the whole graph (BN folding) instead of wrapping layers per a scheme.
GRAPH_PRESETS = ("int8_all",)
# `int8`: the best int8 graph for the model: `int8_all` (every BN folded, every op of the
# LiteRT file int8: TFMOT's 36-op ResNet-20 graph) for a trained model, the per-layer
# `int8_qat` for one trained from scratch (BN cannot be folded before it has statistics).
INT8_PRESET = "int8"


def best_int8_graph(trained=True):
    """The preset `int8` stands for: `int8_all` for a trained model, else `int8_qat`.

    >>> best_int8_graph(), best_int8_graph(trained=False)
    ('int8_all', 'int8_qat')
    """
    return GRAPH_PRESETS[0] if trained else "int8_qat"


def quant_scheme(quant, wbits, abits, quant_first_last=False, quant_shortcut=False, trained=True):
    """The scheme of the apps' `--quant` / `--wbits` / `--abits` / `--quant_*` flags: a preset
    name (`int8_qat`, `int8_qat_fold_bn`, `int8_all`: bits and coverage fixed) as is, `int8`
    as `best_int8_graph(trained)`, else `scheme_from_flags` of the method.

    >>> quant_scheme("int8_qat", 4, 4), quant_scheme("int8", 8, 8, trained=False)
    ('int8_qat', 'int8_qat')
    >>> quant_scheme("lsq", 4, 2)["input"]
    'lsq:2'
    """
    if quant == INT8_PRESET:
        return best_int8_graph(trained)
    if quant in PRESETS or quant in GRAPH_PRESETS:
        return quant
    return scheme_from_flags(quant, wbits, abits, quant_first_last, quant_shortcut)


def quantize_model(model, scheme):
    """A new functional model whose layers are wrapped in `QuantizeWrapper` per `scheme`.

    Args:
        model: a functional (or Sequential) Keras model; its layer objects are reused.
        scheme: a preset name (`"int8_qat"`), or a scheme dict (see
            `quadkeras.quantize.scheme`), e.g. the output of `scheme_from_flags`; or
            `"int8_all"`: the all-int8 graph of a *trained* float model
            (`quadkeras.quantize.int8_graph.int8_model`: every BN folded, fake-quant on every
            product and add too), for PTQ / QAT fine-tunes, not for training from scratch;
            `"int8"`: the best int8 graph, i.e. `"int8_all"` (`best_int8_graph`).
    """
    if scheme == INT8_PRESET:  # a model handed in here is a trained one
        scheme = best_int8_graph()
    if isinstance(scheme, str) and scheme in GRAPH_PRESETS:
        from quadkeras.quantize.int8_graph import int8_model  # noqa: PLC0415 (imports this module)

        return int8_model(model)
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


def quantized_layers(model):
    """The layers of a model that hold quantizers (every `QuantizerHost`: `QuantizeWrapper`,
    `QuantizeOutput`, BSQ's `BitQuantWrapper`), in order, nested models included: the one way
    to find them."""
    found = []
    for layer in model.layers:
        if isinstance(layer, QuantizerHost):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += quantized_layers(layer)
    return found


def initialize_quantizers(model, x):
    """Initialise data-dependent quantizer parameters from one batch `x`, eagerly.

    Activation quantizers (LSQ step, PACT-free ranges, non-uniform levels, ...) take their
    initial value from the first training batch. Under TensorFlow and torch `fit` can do
    that inside `call`, but then the compiled train step keeps the data-init branch (a
    `cond`, a finiteness check and two assignments per quantizer, every step), and JAX's
    trainer keeps no assignment to a *trainable* variable made inside `call`. Call this once
    before `fit` (`quadkeras.training.train` does, on every backend): the step is then traced
    without the branch. Other state touched by the pass (BatchNorm moving statistics) is
    restored. Returns how many quantizers were initialised (0 if none needed it).

    >>> import numpy as np, keras
    >>> inp = keras.Input((4,))
    >>> m = keras.Model(inp, QuantizeWrapper(keras.layers.Dense(2), input_quantizer="lsq:4")(inp))
    >>> initialize_quantizers(m, np.full((8, 4), 3.0, "float32"))
    1
    >>> m.layers[1].input_quantizer.awaiting_data_init
    False
    """
    quantizers = [q for layer in quantized_layers(model) for q in layer.quantizers()]
    pending = [q for q in quantizers if q.awaiting_data_init]
    if pending:
        owned = {id(v) for q in pending for v in q.data_init_variables()}
        keep = [(v, keras.ops.convert_to_numpy(v)) for v in model.variables if id(v) not in owned]
        model(x, training=True)
        for var, value in keep:
            var.assign(value)
    for q in quantizers:
        q.read_init_state()
    return len(pending)
