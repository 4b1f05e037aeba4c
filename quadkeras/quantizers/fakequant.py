"""`FakeQuant`: plain uniform fake quantization that the LiteRT converter understands.

Calls `keras.quantizers.fake_quant_with_min_max_vars`, which on the TensorFlow backend lowers
to TF `FakeQuantWithMinMaxVars[PerChannel]` ops (the TFMOT recipe that makes the converter
emit int8 kernels); other backends use Keras' equivalent op. Min/max live in non-trainable
variables:

- weights (`role="weight"`): symmetric, `narrow_range`, set from the current kernel at build
  and at every training step (TFMOT's "last value"); per-channel on the last axis for conv
  kernels (rank 4), per-tensor otherwise (per-channel Dense kernels break the converter).
- activations: asymmetric, exponential moving average of the observed batch min/max
  (`ema_decay`), initialised from the first training batch; range always includes 0.

A batch whose statistics are not finite (a NaN/inf anywhere) leaves min/max unchanged.

Example:

>>> import numpy as np, keras
>>> q = FakeQuant(bits=8)
>>> q.build((None, 4))
>>> y = q(np.linspace(-1, 1, 8, dtype="float32").reshape(2, 4), training=True)
>>> [v.name for v in q.weights]
['min', 'max', 'initialized']
"""

import keras
from keras import ops

from quadkeras.quantizers.base import Quantizer, abs_max, keep_finite, register
from quadkeras.quantizers.options import UNIT
from quadkeras.utils.validation import check_choice


@register
class FakeQuant(Quantizer):
    """Uniform affine fake-quant with min/max variables (TF FakeQuant ops on TF)."""

    method = "fakequant"
    allowed_bits = tuple(range(2, 9))

    def __init__(self, bits=8, ema_decay=0.999, narrow_range=None, **kwargs):
        super().__init__(bits=bits, **kwargs)
        self.ema_decay = self.number("ema_decay", ema_decay, UNIT)
        self.narrow_range = check_choice("narrow_range", narrow_range, (None, True, False))

    def _default_granularity(self, shape):
        return "per_channel" if self.role == "weight" and len(shape) == 4 else "per_tensor"

    def _build(self, shape):
        weight = self.role == "weight"
        self.min_var = self.add_param("min", initializer="zeros", trainable=False,
                                      data_init=self._range_min if weight else self._batch_min)
        self.max_var = self.add_param("max", initializer="zeros", trainable=False,
                                      data_init=self._range_max if weight else self._batch_max)

    def _range_max(self, x):
        return ops.maximum(self.reduce_params(x, abs_max), 1e-8)

    def _range_min(self, x):
        return -self._range_max(x)

    def _batch_min(self, x):
        return ops.minimum(self.reduce_params(x, ops.min), 0.0)

    def _batch_max(self, x):
        return ops.maximum(self.reduce_params(x, ops.max), 1e-8)

    def fake_quantize(self, x, training):
        if self.role == "weight":
            lo, hi = self._weight_range(x, training)
        else:
            lo, hi = self._activation_range(x, training)
        narrow = self.role == "weight" if self.narrow_range is None else bool(self.narrow_range)
        axis = None if self.granularity == "per_tensor" else -1
        lo, hi = self.expand(lo), self.expand(hi)
        return keras.quantizers.fake_quant_with_min_max_vars(
            x, lo, hi, num_bits=self.bits, narrow_range=narrow, axis=axis)

    def _weight_range(self, x, training):
        if not training:
            return ops.convert_to_tensor(self.min_var), ops.convert_to_tensor(self.max_var)
        hi = ops.stop_gradient(keep_finite(self._range_max(x), self.max_var))
        self.min_var.assign(-hi)
        self.max_var.assign(hi)
        return -hi, hi

    def _activation_range(self, x, training):
        lo, hi = self.param(self.min_var), self.param(self.max_var)
        if not training:
            return lo, hi
        d = self.ema_decay
        lo = ops.stop_gradient(keep_finite(lo * d + self._batch_min(x) * (1.0 - d), lo))
        hi = ops.stop_gradient(keep_finite(hi * d + self._batch_max(x) * (1.0 - d), hi))
        self.min_var.assign(lo)
        self.max_var.assign(hi)
        return lo, hi

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay, "narrow_range": self.narrow_range}
