"""`DoReFa`: DoReFa-Net quantization (Zhou et al. 2016), weights and activations.

quantize_k(r) = round((2^k−1)·r)/(2^k−1) with a straight-through round.
Weights (`role="weight"`): w_q = 2·quantize_k(tanh(w)/(2·max|tanh(w)|) + ½) − 1 (the max is
per tensor, channel or group); 1 bit: sign(w)·mean|w| (STE). Activations: quantize_k(clip(x, 0, 1)).

Example:

>>> import numpy as np, keras
>>> q = DoReFa(bits=2, role="activation")
>>> q.build((None, 3))
>>> [float(v) for v in keras.ops.convert_to_numpy(q(np.array([[-1., 0.4, 2.]], "float32")))[0]]
[0.0, 0.3333333432674408, 1.0]
"""

from keras import ops

from quadkeras.quantizers.base import Quantizer, abs_max, abs_mean, register, sign
from quadkeras.quantizers.ste import round_ste, ste


def quantize_k(r, bits):
    n = float(2 ** bits - 1)
    return round_ste(r * n) / n


@register
class DoReFa(Quantizer):
    """DoReFa weight (tanh-normalised) or activation (clip to [0, 1]) quantizer."""

    method = "dorefa"
    allowed_bits = tuple(range(1, 9))

    def fake_quantize(self, x, training):
        if self.role == "activation":
            return quantize_k(ops.clip(x, 0.0, 1.0), self.bits)
        if self.bits == 1:
            scale = ops.stop_gradient(self.expand(self.reduce(x, abs_mean)))
            return ste(x, sign(x) * scale)
        t = ops.tanh(x)
        t = t / (2.0 * ops.maximum(self.expand(self.reduce(t, abs_max)), 1e-12)) + 0.5
        return 2.0 * quantize_k(t, self.bits) - 1.0
