"""`PACT`: parameterized clipping activation (Choi et al. 2018), activations only.

y = clip(x, 0, α), y_q = round(y·(2^k−1)/α)·α/(2^k−1); α (variable `alpha`, init
`alpha_init`, default 10) is trained: ∂y_q/∂α = 1 where x ≥ α else 0, ∂y_q/∂x = 1 on (0, α).
Give α its own L2 decay (e.g. the training app's custom decay for names containing `alpha`).

Example:

>>> import numpy as np, keras
>>> q = PACT(bits=2, alpha_init=3.0)
>>> q.build((None, 3))
>>> [float(v) for v in keras.ops.convert_to_numpy(q(np.array([[-1., 1.2, 5.]], "float32")))[0]]
[0.0, 1.0, 3.0]
"""

from keras import initializers, ops

from quadkeras.quantizers.base import Quantizer, positive, register
from quadkeras.quantizers.options import POSITIVE
from quadkeras.quantizers.ste import ste


@register
class PACT(Quantizer):
    """Learned clipping level α, then uniform unsigned quantization of [0, α]."""

    method = "pact"
    allowed_bits = tuple(range(1, 9))

    def __init__(self, bits=4, alpha_init=10.0, **kwargs):
        super().__init__(bits=bits, **kwargs)
        self.alpha_init = self.number("alpha_init", alpha_init, POSITIVE)

    def _build(self, shape):
        if self.role == "weight":
            raise ValueError("Invalid role='weight' for quantizer 'pact': expected 'activation' "
                             "(use 'dorefa' or 'lsq' for weights).")
        self.alpha = self.add_param("alpha", initializer=initializers.Constant(self.alpha_init))

    def clip(self, x):
        """The clipping alone, min(relu(x), α) (gradient 1 to α where x ≥ α); returns (y, α)."""
        alpha = self.expand(positive(ops.convert_to_tensor(self.alpha)))
        return ops.minimum(ops.relu(x), alpha), alpha

    def fake_quantize(self, x, training):
        y, alpha = self.clip(x)
        n = float(2 ** self.bits - 1)
        a = ops.stop_gradient(alpha)
        return ste(y, ops.round(y * n / a) * a / n)

    def get_config(self):
        return {**super().get_config(), "alpha_init": self.alpha_init}
