"""`LQNet`: learned quantization with a K-bit basis (Zhang et al., ECCV 2018).

Levels are {vᵀe : e ∈ E^K} for a basis v ∈ R^K (K = bits, variable `basis`), with
E = {−1, +1} for signed tensors (weights) and {0, 1} for unsigned ones (activations after
ReLU). As in the LQ-Nets code: weights have one basis per output channel (default
`per_channel`), activations one per tensor; every element goes to its nearest level, with a
straight-through gradient that is never zeroed for weights and zeroed above the top level
only for activations.

Basis update ("quantization error minimisation", `basis_update="qem"`, the default): in each
training step, with B (M×K) the encodings of the current assignment of the M elements of one
parameter group, v* solves the ridge normal equations (BᵀB/M + λI) v = Bᵀx/M (`ridge`
λ = 1e-4, so it stays solvable when levels go unused, e.g. 4 bits on a small layer), then
v ← m·v + (1−m)·v* (`momentum`, 0.9). Bits no element uses and non-finite solutions keep
their value. `basis_update="gradient"` instead makes the basis trainable (∂q/∂v = e).
Init (LQ-Nets): v_j = 2^j·0.6745·√(2/fan_in)/2^(K−1) for weights (fan_in = kernel size ×
input channels), v_j = 2^j·0.6745·2/(2^K−1) for activations.

Example:

>>> import numpy as np, keras
>>> q = LQNet(bits=2)
>>> q.build_from_value(np.random.randn(8, 2).astype("float32"))
>>> len(np.unique(keras.ops.convert_to_numpy(q(np.random.randn(8, 2).astype("float32")))))  <= 4
True
"""

import itertools

import numpy as np
from keras import ops

from quadkeras.quantizers.base import Quantizer, abs_mean, register
from quadkeras.quantizers.options import NON_NEGATIVE, UNIT
from quadkeras.quantizers.ste import nearest_level
from quadkeras.utils.validation import check_choice

BASIS_UPDATES = ("qem", "gradient")


def encodings(bits, signed):
    """All 2^bits codes as a (2^bits, bits) float32 array of ±1 (signed) or 0/1."""
    values = (-1.0, 1.0) if signed else (0.0, 1.0)
    return np.array(list(itertools.product(values, repeat=bits)), "float32")


def range_init(quantizer, x, levels):
    """LSQ-style data range: largest level at 2·mean|x|·√(levels−1) (per parameter)."""
    return ops.maximum(2.0 * quantizer.reduce_params(x, abs_mean) * float(np.sqrt(levels - 1)), 1e-6)


def initial_basis(bits, role, shape):
    """LQ-Nets' initial basis (K,) for a weight of `shape` (fan_in = all but the last axis)
    or for activations."""
    powers = 2.0 ** np.arange(bits)
    if role == "weight":
        fan_in = int(np.prod([d for d in shape[:-1] if d is not None])) or 1
        return (powers * 0.6745 * np.sqrt(2.0 / fan_in) / 2 ** (bits - 1)).astype("float32")
    return (powers * 0.6745 * 2.0 / (2 ** bits - 1)).astype("float32")


@register
class LQNet(Quantizer):
    """Nearest level of a learned K-bit basis; basis by QEM (default) or by gradient."""

    method = "lqnet"
    allowed_bits = (1, 2, 3, 4)
    weight_granularity = "per_channel"

    def __init__(self, bits=2, basis_update="qem", momentum=0.9, ridge=1e-4, **kwargs):
        super().__init__(bits=bits, **kwargs)
        self.basis_update = check_choice("basis_update", basis_update, BASIS_UPDATES)
        self.momentum = self.number("momentum", momentum, UNIT)
        self.ridge = self.number("ridge", ridge, NON_NEGATIVE)

    def _build(self, shape):
        self.codes = encodings(self.bits, self.signed)
        start = initial_basis(self.bits, self.role, shape)
        self.basis = self.add_param("basis", extra_shape=(self.bits,),
                                    initializer=lambda shape, dtype=None: ops.ones(shape, dtype)
                                    * ops.convert_to_tensor(start, dtype),
                                    trainable=self.basis_update == "gradient")

    def levels(self, basis):
        """(param_shape..., 2^K) levels of a basis."""
        return ops.matmul(basis, ops.convert_to_tensor(self.codes.T))

    def fake_quantize(self, x, training):
        basis = ops.convert_to_tensor(self.basis)
        clip = None if self.role == "weight" else "above"
        q, index = nearest_level(x, self.expand(self.levels(basis)), clip=clip)
        if training and self.basis_update == "qem":
            self._qem(x, index, basis)
        return q

    def _qem(self, x, index, basis):
        """v ← m·v + (1−m)·argmin_v ‖Bv − x‖²/M + λ‖v‖² per parameter group."""
        k = self.bits
        cols = self.per_param(ops.stop_gradient(ops.cast(x, "float32")))
        codes = ops.take(ops.convert_to_tensor(self.codes), ops.reshape(self.per_param(index), (-1,)), axis=0)
        codes = ops.reshape(codes, (-1, cols.shape[-1], k))
        count = ops.cast(ops.shape(cols)[0], "float32")
        gram = ops.einsum("mpk,mpj->pkj", codes, codes) / count
        rhs = ops.einsum("mpk,mp->pk", codes, cols) / count
        solved = ops.squeeze(ops.solve(gram + self.ridge * ops.eye(k, dtype=gram.dtype),
                                       ops.expand_dims(rhs, -1)), -1)
        used = ops.diagonal(gram, axis1=-2, axis2=-1) > 0.0
        current = ops.reshape(basis, (-1, k))
        target = ops.where(ops.logical_and(used, ops.isfinite(solved)), solved, current)
        new = self.momentum * current + (1.0 - self.momentum) * target
        self.basis.assign(ops.reshape(new, self.basis.shape))

    def get_config(self):
        return {**super().get_config(), "basis_update": self.basis_update, "momentum": self.momentum,
                "ridge": self.ridge}
