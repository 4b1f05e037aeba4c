"""`MaxAbs`: per-batch max-abs uniform quantizer with an identity (STE) gradient.

BSQ's activation quantizer (Yang et al. 2021, ResNet-20 runs): S = max|x| over the whole
batch tensor (no stored state), y = S · round(|x|·(2^k−1)/S)/(2^k−1) · sign(x), y = 0 when
S = 0; the gradient passes straight through (S is not differentiated).

Example:

>>> import numpy as np, keras
>>> q = MaxAbs(bits=2)
>>> q.build((None, 3))
>>> [float(v) for v in keras.ops.convert_to_numpy(q(np.array([[0.5, 1.2, 3.]], "float32")))[0]]
[0.0, 1.0, 3.0]
"""

from keras import ops

from quadkeras.quantizers.base import Quantizer, register
from quadkeras.quantizers.ste import ste


@register
class MaxAbs(Quantizer):
    """Uniform grid S·k/(2^bits−1), S = max|x| of the current tensor; identity gradient."""

    method = "maxabs"
    allowed_bits = tuple(range(1, 9))

    def fake_quantize(self, x, training):
        top = float(2 ** self.bits - 1)
        s = ops.max(ops.abs(x))
        safe = ops.where(s > 0, s, ops.ones_like(s))
        q = ops.sign(x) * ops.round(ops.abs(x) * top / safe) * safe / top
        return ste(x, ops.where(s > 0, q, ops.zeros_like(x)))
