"""`MaxAbs`: max-abs uniform quantizer with an identity (STE) gradient.

BSQ's activation quantizer (Yang et al. 2021, ResNet-20 runs): S = max|x| over the whole
batch tensor (no stored state), y = S · round(|x|·(2^k−1)/S)/(2^k−1) · sign(x), y = 0 when
S = 0; the gradient passes straight through (S is not differentiated).

The per-batch S makes an image's output depend on the other images of its batch (as in the
reference, in training and evaluation). A deployed model needs one answer per image:
`scale=S` fixes the grid (|x| clipped to S first); `quadkeras.bsq.fix_activation_scales`
sets it from calibration images, and export does so for every BSQ model (docs/bsq.md).

Example:

>>> import numpy as np, keras
>>> q = MaxAbs(bits=2)
>>> q.build((None, 3))
>>> [float(v) for v in keras.ops.convert_to_numpy(q(np.array([[0.5, 1.2, 3.]], "float32")))[0]]
[0.0, 1.0, 3.0]
>>> fixed = MaxAbs(bits=2, scale=6.0)  # grid 0, 2, 4, 6 whatever the batch holds
>>> fixed.build((None, 3))
>>> [float(v) for v in keras.ops.convert_to_numpy(fixed(np.array([[0.5, 1.2, 9.]], "float32")))[0]]
[0.0, 2.0, 6.0]
"""

from keras import ops

from quadkeras.quantizers.base import Quantizer, register
from quadkeras.quantizers.ste import ste


@register
class MaxAbs(Quantizer):
    """Uniform grid S·k/(2^bits−1): S = max|x| of the current tensor, or the fixed `scale`;
    identity gradient.

    Args:
        bits: 1..8.
        scale: None (the reference: S from each batch) or a fixed S >= 0 (|x| clipped to it;
            S = 0 gives zeros, as a batch of zeros does).
    """

    method = "maxabs"
    allowed_bits = tuple(range(1, 9))

    def __init__(self, bits=8, scale=None, **kwargs):
        super().__init__(bits=bits, **kwargs)
        if scale is not None and not float(scale) >= 0:  # also refuses NaN
            raise ValueError(f"Invalid scale={scale!r} for MaxAbs: expected None (per batch) or a "
                             "number >= 0.")
        self.scale = None if scale is None else float(scale)

    def fake_quantize(self, x, training):
        top = float(2 ** self.bits - 1)
        if self.scale is not None:
            if self.scale == 0:
                return ste(x, ops.zeros_like(x))
            s = self.scale
            q = ops.sign(x) * ops.round(ops.minimum(ops.abs(x), s) * top / s) * s / top  # the batch form's order
            return ste(x, q)
        s = ops.max(ops.abs(x))
        safe = ops.where(s > 0, s, ops.ones_like(s))
        q = ops.sign(x) * ops.round(ops.abs(x) * top / safe) * safe / top
        return ste(x, ops.where(s > 0, q, ops.zeros_like(x)))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
