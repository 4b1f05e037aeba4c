"""`XNOR` (binary) and `Ternary` (TWN) quantizers.

XNOR / binary: weights sign(W)·α with α = mean|W| (per output channel by default), STE
identity gradient; activations sign(x) with the gradient clipped to |x| ≤ 1. sign(0) = +1.
Ternary (TWN, Li et al. 2016): Δ = 0.7·mean|W|, α = mean{|W| : |W| > Δ}, w ∈ {−α, 0, α}
(per layer, i.e. per tensor, by default as in the paper; `per_channel` optional), STE
identity gradient.

Example:

>>> import numpy as np, keras
>>> q = XNOR(granularity="per_tensor")
>>> q.build_from_value(np.ones((2, 2), "float32"))
>>> keras.ops.convert_to_numpy(q(np.array([[1., -3.], [0., 2.]], "float32"))).tolist()
[[1.5, -1.5], [1.5, 1.5]]
"""

from keras import ops

from quadkeras.quantizers.base import Quantizer, abs_mean, register, sign
from quadkeras.quantizers.options import NON_NEGATIVE
from quadkeras.quantizers.ste import ste


@register
class XNOR(Quantizer):
    """1-bit sign quantizer with per-channel scale for weights (XNOR-Net)."""

    method = "xnor"
    allowed_bits = (1,)
    weight_granularity = "per_channel"

    def __init__(self, bits=1, **kwargs):
        super().__init__(bits=bits, **kwargs)

    def fake_quantize(self, x, training):
        if self.role == "activation":
            clipped = ops.clip(x, -1.0, 1.0)
            return ste(clipped, sign(x))
        return ste(x, sign(x) * self.expand(self.reduce(x, abs_mean)))


@register
class Ternary(Quantizer):
    """Ternary weight networks: {−α, 0, α} with threshold 0.7·mean|W|."""

    method = "ternary"
    allowed_bits = (2,)
    weight_granularity = "per_tensor"  # TWN: one Δ and α per layer

    def __init__(self, bits=2, threshold=0.7, **kwargs):
        super().__init__(bits=bits, **kwargs)
        self.threshold = self.number("threshold", threshold, NON_NEGATIVE)

    def fake_quantize(self, x, training):
        a = ops.abs(x)
        delta = self.threshold * self.expand(self.reduce(x, abs_mean))
        mask = ops.cast(a > delta, x.dtype)
        count = self.expand(self.reduce(mask, ops.sum))
        alpha = self.expand(self.reduce(a * mask, ops.sum)) / ops.maximum(count, 1.0)
        return ste(x, sign(x) * mask * alpha)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}
