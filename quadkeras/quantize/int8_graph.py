"""An all-int8 QAT graph for LiteRT: BN folded, fake-quant after every product and add.

`int8_model(model)` = `fold_batch_norms` (every BN absorbed into the conv/dense/quadratic
layer before it, exact at inference) -> `quantize_model(..., "int8_qat")` (fake-quant on
every conv/dense/quad input, per-channel kernel, output, quadratic fused branch output and
branch product) -> a fake-quant on every residual add (after its ReLU) and on every ReLU
output that reaches an add or a pooling (`quantize_merges`), so the
LiteRT converter finds an int8 range on every tensor: each CONV_2D, FULLY_CONNECTED, the
quadratic MUL and ADD and the residual ADD run in int8, with no float BN MUL/ADD left
between QUANTIZE/DEQUANTIZE pairs. Calibrate it (`quadkeras.quantize.calibration`) for PTQ,
or fine-tune it (QAT) and export with `litert_qat`. `mul_add_census` counts a `.tflite`'s
MUL/ADD/CONV_2D/... by int8 vs float.

Example:

>>> import numpy as np, keras
>>> from quadkeras.layers import QuadConv2D
>>> inp = keras.Input((8, 8, 3))
>>> x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(inp)
>>> x = keras.layers.BatchNormalization(name="stem_bn")(x)
>>> y = QuadConv2D(4, 3, padding="same", name="q")(x)
>>> y = keras.layers.BatchNormalization(name="q_bn")(y)
>>> y = keras.layers.Add(name="add")([x, y])
>>> out = keras.layers.Dense(2, name="fc")(keras.layers.GlobalAveragePooling2D()(y))
>>> q = int8_model(keras.Model(inp, out))
>>> [type(q.get_layer(n)).__name__ for n in ("stem", "stem_bn", "q", "q_bn", "add")]
['QuantizeWrapper', 'FoldedBatchNorm', 'QuantizeWrapper', 'FoldedBatchNorm', 'QuantizeOutput']
"""

import keras

from quadkeras.quantize.fold import fold_batch_norms, graph_edges
from quadkeras.quantize.model import quantize_model
from quadkeras.quantize.output import QuantizeOutput
from quadkeras.quantize.wrapper import QuantizeWrapper

MERGE_LAYERS = (keras.layers.Add,)
CENSUS_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL", "ADD")


def int8_model(model, scheme="int8_qat", merge_quantizer="fakequant:8"):
    """The all-int8 QAT graph of a float `model` (a new model; `model` is not modified).

    Args:
        model: a functional float Keras model (BatchNormalizations are folded).
        scheme: the `quantize_model` scheme for conv/dense/quadratic layers.
        merge_quantizer: quantizer spec put on the output of every `Add` layer.
    """
    return quantize_merges(quantize_model(fold_batch_norms(model), scheme), merge_quantizer)


def quantize_merges(model, spec="fakequant:8"):
    """A new model with a fake-quant (`QuantizeOutput`) where an activation would otherwise
    reach an op without an int8 range: on every `Add` (on the `ReLU` after it when that ReLU
    is its only consumer, the pattern the converter fuses into one int8 ADD), and on every
    `ReLU` that feeds anything other than a quantized conv/dense input (a residual add, a
    pooling)."""
    _, consumers = graph_edges(model)
    wrap = set()
    for layer in model.layers:
        after = consumers.get(id(layer), [])
        if isinstance(layer, MERGE_LAYERS):
            single_relu = len(after) == 1 and isinstance(after[0], keras.layers.ReLU)
            wrap.add(id(after[0]) if single_relu else id(layer))
        elif isinstance(layer, keras.layers.ReLU) and not all(
                isinstance(c, QuantizeWrapper) and c.input_quantizer is not None for c in after):
            wrap.add(id(layer))

    def clone(layer):
        if id(layer) in wrap:
            return QuantizeOutput(layer, output_quantizer=spec, name=layer.name)
        return layer

    quantized = keras.models.clone_model(model, clone_function=clone)
    config = getattr(model, "quadkeras_config", None)
    if config is not None:
        quantized.quadkeras_config = config
    return quantized


def mul_add_census(census):
    """{op: (int8 count, total)} for CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / MUL / ADD,
    from `quadkeras.export.parity.op_census(content)` (an op is int8 when its input is)."""
    out = {}
    for key, n in census["ops"].items():
        name, dtype = key.split("[", 1)
        if name in CENSUS_OPS:
            int8, total = out.get(name, (0, 0))
            out[name] = (int8 + n * dtype.startswith("int8"), total + n)
    return {name: out[name] for name in CENSUS_OPS if name in out}


def format_census(census):
    """One line `CONV_2D int8 16/16, MUL int8 12/12, ...` from `parity.op_census`'s dict."""
    return ", ".join(f"{n} int8 {a}/{b}" for n, (a, b) in mul_add_census(census).items())
