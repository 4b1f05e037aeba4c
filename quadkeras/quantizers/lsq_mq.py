"""`LSQModelQuantization` (`"lsq_mq"`): model-quantization's LSQ *variant*, named as such.

The LSQ rows of the seed table (ResNet-18 ImageNet 2/2, ResNet-20 CIFAR-100 2/2) come from
this variant of the model-quantization project, not from the LSQ paper (`"lsq"`):

- a learnable clip value c (variable `clip`, one per tensor by default; per channel
  or per group with the shared granularity options), floored at a small positive value;
- signed (weights): x/c clipped to [−1, 1] and snapped to 2^b symmetric levels *without*
  zero, (2k + 1 − 2^b)/(2^b − 1)·c, e.g. {±1/3, ±1}·c at 2 bits; unsigned (activations):
  x/c clipped to [0, 1] and snapped to k/(2^b − 1)·c;
- gradients by autodiff with a straight-through round: ∂q/∂x = 1 inside [−c, c] ([0, c]),
  0 outside; ∂q/∂c = q/c − x/c inside, the clipped level (±1 / 1 / 0) outside; no gradient
  scale (g = 1, the variant's default `none`);
- c initialised to `boundary` (1.0), or with `clip_init="max"` to max|x| of the kernel (at
  build) or of the first training batch (activations);
- optional `normalize="var_mean"`: the tensor standardised per quantization group (per
  tensor by default) with detached mean/variance, as model-quantization does.

Example:

>>> import numpy as np, keras
>>> q = LSQModelQuantization(bits=2)
>>> q.build_from_value(np.zeros((1, 4), "float32"))
>>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(q(np.array([[-2., -0.2, 0.1, 0.9]], "float32")))[0]]
[-1.0, -0.3333, 0.3333, 1.0]
"""

from keras import initializers, ops

from quadkeras.quantizers.base import Quantizer, abs_max, positive, register
from quadkeras.quantizers.options import POSITIVE
from quadkeras.quantizers.ste import round_ste
from quadkeras.utils.validation import check_choice

CLIP_INITS = ("boundary", "max")


@register
class LSQModelQuantization(Quantizer):
    """Learnable clip c, 2^b levels on [−c, c] without zero (signed) or on [0, c] (unsigned)."""

    method = "lsq_mq"
    allowed_bits = tuple(range(1, 9))
    var_mean_axes = "group"  # model-quantization: per quantization group, detached statistics
    var_mean_detached = True

    def __init__(self, bits=2, boundary=1.0, clip_init="boundary", **kwargs):
        super().__init__(bits=bits, **kwargs)
        self.boundary = self.number("boundary", boundary, POSITIVE)
        self.clip_init = check_choice("clip_init", clip_init, CLIP_INITS)

    def _build(self, shape):
        data_init = self._init_clip if self.clip_init == "max" else None
        self.clip = self.add_param("clip", initializer=initializers.Constant(self.boundary),
                                   data_init=data_init)

    def _init_clip(self, x):
        return ops.maximum(self.reduce_params(x, abs_max), 1e-8)

    def fake_quantize(self, x, training):
        c = self.expand(positive(self.param(self.clip)))
        n = float(2 ** self.bits - 1)
        if self.signed:  # [-1, 1] -> [0, n], round, back: levels 2k/n - 1 = (2k + 1 - 2^b)/n
            y = ops.clip(x / c, -1.0, 1.0)
            return (2.0 * round_ste((y + 1.0) * (n / 2.0)) / n - 1.0) * c
        y = ops.clip(x / c, 0.0, 1.0)
        return round_ste(y * n) / n * c

    def get_config(self):
        return {**super().get_config(), "boundary": self.boundary, "clip_init": self.clip_init}
