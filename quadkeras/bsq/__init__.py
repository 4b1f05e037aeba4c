"""BSQ: bit-level sparsity mixed-precision quantization (Yang et al., ICLR 2021) for Keras 3.

Example:

>>> import keras
>>> from quadkeras.bsq import to_bsq, scheme_of
>>> model = to_bsq(keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, name="fc")]), bits=8)
>>> scheme_of(model)
{'fc': 8}
"""

from quadkeras.bsq.activation import BSQActivation
from quadkeras.bsq.callback import BSQCallback, reset_optimizer_slots
from quadkeras.bsq.convert import (
    activation_scales, batch_scaled_activations, block_activations, bsq_layers, fix_activation_scales,
    requantize_model, scheme_of, set_bsq_decay, shortcut_convs, to_bsq, to_float, to_representation)
from quadkeras.bsq.report import bsq_report, format_report, save_report
from quadkeras.bsq.wrapper import BitQuantWrapper, ClipConstraint

__all__ = [
    "BSQActivation", "BSQCallback", "BitQuantWrapper", "ClipConstraint", "activation_scales",
    "batch_scaled_activations", "block_activations", "bsq_layers", "bsq_report", "fix_activation_scales",
    "format_report", "requantize_model", "reset_optimizer_slots", "save_report", "scheme_of",
    "set_bsq_decay", "shortcut_convs", "to_bsq", "to_float", "to_representation",
]
