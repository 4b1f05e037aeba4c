"""`NonUniform`: 2^b freely learnable, non-uniformly spaced levels.

Our formulation (documented choice; model-quantization's "non-uniform" option is not
reproduced exactly): each parameter group (tensor / output channel / group) owns 2^b level
values (variable `levels`, trainable). Forward: nearest level. Backward:
∂q/∂level_i = 1 for the elements mapped to level i (so each level moves to the mean of its
elements under an L2 task gradient), ∂q/∂x = 1 inside [min level, max level], 0 outside (STE).
Init: uniform levels over [−r, r] (signed) or [0, r] (unsigned), r = 2·mean|x|·√(2^b−1)
(the LSQ init range), from the kernel at build or the first training batch.

Example:

>>> import numpy as np, keras
>>> q = NonUniform(bits=2)
>>> q.build_from_value(np.random.randn(6, 2).astype("float32"))
>>> len(np.unique(keras.ops.convert_to_numpy(q(np.random.randn(6, 2).astype("float32"))))) <= 4
True
"""

import numpy as np
from keras import ops

from quadkeras.quantizers.base import Quantizer, register
from quadkeras.quantizers.lqnet import range_init
from quadkeras.quantizers.ste import nearest_level


@register
class NonUniform(Quantizer):
    """Nearest of 2^b learnable levels per tensor / channel / group."""

    method = "nonuniform"
    allowed_bits = (1, 2, 3, 4)

    def _build(self, shape):
        count = 2 ** self.bits
        self.levels = self.add_param("levels", initializer="zeros", extra_shape=(count,),
                                     data_init=self._init_levels)

    def _init_levels(self, x):
        count = 2 ** self.bits
        top = range_init(self, x, count)
        grid = np.linspace(-1.0 if self.signed else 0.0, 1.0, count).astype("float32")
        return ops.expand_dims(top, -1) * ops.convert_to_tensor(grid)

    def fake_quantize(self, x, training):
        levels = self.param(self.levels)
        q, _ = nearest_level(x, self.expand(levels))
        return q
