"""`LSQ`: learned step size quantization (Esser et al., ICLR 2020).

v̂ = s·round(clip(v/s, −Q_N, Q_P)); signed Q_N = 2^(b−1), Q_P = 2^(b−1)−1; unsigned Q_N = 0,
Q_P = 2^b−1. The step `s` (variable `step`) is trained; its gradient is scaled by
g = 1/√(N·Q_P) (N = elements per step: weights per tensor/channel/group, or features per
sample for activations, from the runtime shape when the static one has None dimensions). Init s = 2·mean|v|/√Q_P from the kernel at build, or from the first
training batch for activations. Gradients (STE): ∂v̂/∂v = 1 inside the clip range, 0 outside;
∂v̂/∂s = −v/s + round(v/s) inside, −Q_N or Q_P at the clip.

Example:

>>> import numpy as np, keras
>>> q = LSQ(bits=2)
>>> q.build_from_value(np.array([[1., -1.]] * 4, "float32"))
>>> float(keras.ops.convert_to_numpy(q.step))  # 2*mean|v|/sqrt(Q_P) = 2*1/1
2.0
"""

import numpy as np
from keras import ops

from quadkeras.quantizers.base import POSITIVE_FLOOR, Quantizer, abs_mean, register
from quadkeras.quantizers.ste import scaled_round


@register
class LSQ(Quantizer):
    """Learned step size quantizer (signed weights / unsigned activations by default)."""

    method = "lsq"
    allowed_bits = tuple(range(2, 9))

    def q_range(self):
        """(Q_N, Q_P) for the current bit width and signedness."""
        if self.signed:
            return 2 ** (self.bits - 1), 2 ** (self.bits - 1) - 1
        return 0, 2 ** self.bits - 1

    def _build(self, shape):
        self.step = self.add_param("step", initializer="ones", data_init=self._init_step)

    def _init_step(self, x):
        _, qp = self.q_range()
        return ops.maximum(2.0 * self.reduce_params(x, abs_mean) / float(np.sqrt(qp)), 1e-8)

    def gradient_scale(self, x):
        """LSQ's step-gradient scale g = 1/sqrt(N * Q_P): a Python float where N is known
        statically, else a tensor from `x`'s runtime shape."""
        _, qp = self.q_range()
        n = self.elements_per_param(x)
        return float(1.0 / np.sqrt(n * qp)) if isinstance(n, int) else 1.0 / ops.sqrt(n * float(qp))

    def fake_quantize(self, x, training):
        qn, qp = self.q_range()
        g = self.gradient_scale(x)
        # expand (repeat per group) commutes with the element-wise floor and gradient scale
        s = self.expand(self.param(self.step))
        return scaled_round(x, s, -float(qn), float(qp), step_scale=g, floor=POSITIVE_FLOOR)
