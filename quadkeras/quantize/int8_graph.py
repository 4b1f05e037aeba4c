"""An all-int8 QAT graph for LiteRT: BN folded, fake-quant after every product and add.

`int8_model(model)` = `fold_batch_norms` (every BN absorbed into the conv/dense/quadratic
layer before it, exact at inference) -> `quantize_model(..., "int8_qat")` (fake-quant on
every conv/dense/quad input, per-channel kernel, output, quadratic fused branch output and
branch product) -> a fake-quant on every ReLU and residual add output, each tensor rounded
once (`activation_plan`), so the
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

import re

import keras

from quadkeras.utils.attached_config import carry
from quadkeras.quantize.fold import FoldedBatchNorm, fold_batch_norms, graph_edges
from quadkeras.quantize.output import QuantizeOutput
from quadkeras.quantize.scheme import resolve_scheme
from quadkeras.quantize.wrapper import is_quantizable
from quadkeras.quantize.wrapping import wrap_layers

MERGE_LAYERS = (keras.layers.Add,)
PASS_THROUGH = (keras.layers.ReLU, keras.layers.ZeroPadding2D, FoldedBatchNorm)
CENSUS_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL", "ADD")


def int8_model(model, scheme="int8_qat", merge_quantizer="fakequant:8"):
    """The all-int8 QAT graph of a float `model` (a new model; `model` is not modified).

    Fake-quant goes where LiteRT rounds, once per tensor (TFMOT's placement): a conv/dense/
    quad layer followed (after its folded BN) by a ReLU gets no output fake-quant, the ReLU
    gets one (the converter fuses the ReLU into the conv or the quadratic ADD); a layer whose
    input already carries a fake-quant (through ReLU / folded BN / zero padding) gets no
    input fake-quant; every residual add is fake-quantized (after its ReLU).

    Args:
        model: a functional float Keras model (BatchNormalizations are folded).
        scheme: the `quantize_model` scheme (preset name or dict) for conv/dense/quad layers.
        merge_quantizer: quantizer spec of the fake-quants on ReLU and add outputs.
    """
    folded = fold_batch_norms(model)
    scheme = resolve_scheme(scheme)
    plan = activation_plan(folded, scheme)
    for slot in ("input", "output"):
        if plan[slot]:
            pattern = "^(" + "|".join(re.escape(name) for name in sorted(plan[slot])) + ")$"
            scheme["rules"] = scheme["rules"] + [{"name": pattern, slot: None}]
    return quantize_merges(wrap_layers(folded, scheme), plan["wrap"], merge_quantizer)


def activation_plan(model, scheme):
    """{"wrap": names of ReLU / Add layers to fake-quantize, "input": quantizable layers whose
    input fake-quant is redundant, "output": quantizable layers whose output fake-quant moves
    to the ReLU after them}, for a BN-folded functional model."""
    producers, consumers = graph_edges(model)

    def single_next(layer):
        after = consumers.get(id(layer), [])
        while len(after) == 1 and isinstance(after[0], FoldedBatchNorm):
            after = consumers.get(id(after[0]), [])
        return after[0] if len(after) == 1 else None

    wrap, moved, quantized = set(), set(), set()
    for layer in model.layers:
        nxt = single_next(layer)
        if isinstance(layer, keras.layers.ReLU):
            wrap.add(layer.name)
        elif isinstance(layer, MERGE_LAYERS) and not isinstance(nxt, keras.layers.ReLU):
            wrap.add(layer.name)
        elif is_quantizable(layer) and isinstance(nxt, keras.layers.ReLU):
            moved.add(layer.name)
        elif is_quantizable(layer) and scheme["output"] is not None:
            quantized.add(layer.name)
    skip_input = set()
    for layer in model.layers:
        if not is_quantizable(layer):
            continue
        source = producers.get(id(layer), [None])[0]
        while isinstance(source, PASS_THROUGH) and source.name not in wrap:
            source = producers.get(id(source), [None])[0]
        if source is not None and (source.name in wrap or source.name in quantized):
            skip_input.add(layer.name)
    return {"wrap": wrap, "input": skip_input, "output": moved}


def quantize_merges(model, names, spec="fakequant:8"):
    """A new model in which the layers named in `names` (ReLU, Add, ...) get a fake-quant on
    their output (`QuantizeOutput`)."""

    def clone(layer):
        if layer.name in names:
            return QuantizeOutput(layer, output_quantizer=spec, name=layer.name)
        return layer

    return carry(model, keras.models.clone_model(model, clone_function=clone))


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
