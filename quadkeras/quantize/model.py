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

from quadkeras.quantize.int8_graph import int8_model
from quadkeras.quantize.scheme import PRESETS, scheme_from_flags
from quadkeras.quantize.wrapper import QuantizeWrapper  # noqa: F401 (the docstring examples')
from quadkeras.quantize.wrapping import wrap_layers
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
        return int8_model(model)
    return wrap_layers(model, scheme)


def quantized_layers(model):
    """The layers of a model that hold quantizers (every `QuantizerHost`: `QuantizeWrapper`,
    BSQ's layers included, and `QuantizeOutput`), in order, nested models included: the one
    way to find them."""
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
