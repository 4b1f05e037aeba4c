"""Precision of a layer (weights / activations) and its weight memory at that precision.

A layer "knows" its precision if it (or a wrapper around it) has `quantization_bits()`
returning `{"weight": int|None, "activation": int|None}`; `None` or no method means float32.

Example:

>>> import keras
>>> layer = keras.layers.Dense(4)
>>> layer.build((None, 8))
>>> layer_bits(layer)
(32, 32)
>>> weight_memory_bytes(layer, 32)  # (8*4 + 4) float32 values
144
"""

import numpy as np
import keras

FLOAT_BITS = 32


def inner_layer(layer):
    """The layer a quantize / BSQ wrapper holds at `.layer` (the layer itself otherwise)."""
    inner = getattr(layer, "layer", None)
    while isinstance(inner, keras.layers.Layer):
        layer, inner = inner, getattr(inner, "layer", None)
    return layer


def layer_bits(layer):
    """(weight bits, activation bits) of a layer; 32 where it does not say otherwise."""
    method = getattr(layer, "quantization_bits", None)
    bits = method() if callable(method) else {}
    weight, activation = bits.get("weight"), bits.get("activation")
    return int(weight or FLOAT_BITS), int(activation or FLOAT_BITS)


def _size(variable):
    return int(np.prod(variable.shape))


def quantized_weight_count(layer):
    """Number of weights stored at the layer's weight precision (the wrapped `kernel`)."""
    kernel = getattr(inner_layer(layer), "kernel", None)
    return _size(kernel) if kernel is not None else 0


def weight_memory_bytes(layer, weight_bits):
    """Bytes for all weights of `layer`: its kernel at `weight_bits`, everything else float32.

    Counted per variable so that wrappers' own variables (quantizer steps, ranges) are included.
    """
    total = sum(_size(v) for v in layer.weights)
    quantized = quantized_weight_count(layer) if weight_bits != FLOAT_BITS else 0
    bits = quantized * weight_bits + (total - quantized) * FLOAT_BITS
    return int(np.ceil(bits / 8))
