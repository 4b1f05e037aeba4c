"""`LQNet`: learned quantization with a K-bit basis (Zhang et al., ECCV 2018).

Levels are {vᵀe : e ∈ E^K} for a basis v ∈ R^K (K = bits, variable `<prefix>_basis`), with
E = {−1, +1} for signed tensors (weights) and {0, 1} for unsigned ones (activations after
ReLU). Forward: every element goes to its nearest level (STE gradient, clipped to the level
range). Basis update (paper's "quantization error minimisation", `basis_update="qem"`, the
default): in each training step, with B the encodings of the current assignment,
v* = (BᵀB)⁻¹Bᵀx solved per parameter (tensor / output channel / group) and
v ← m·v + (1−m)·v* (`momentum`, default 0.9); the basis is then a non-trainable variable.
`basis_update="gradient"` instead makes the basis trainable (∂q/∂v = e of the chosen level).
Init: v_i ∝ 2^i with the largest level at 2·mean|x|·√(2^K−1) (LSQ's init range).

Example:

>>> import numpy as np, keras
>>> q = LQNet(bits=2)
>>> layer = keras.layers.Layer()
>>> q.build(layer, (8, 2), "kernel", value=np.random.randn(8, 2).astype("float32"))
>>> len(np.unique(keras.ops.convert_to_numpy(q(np.random.randn(8, 2).astype("float32")))))  <= 4
True
"""

import itertools

import numpy as np
from keras import ops

from quadkeras.quantizers.base import Quantizer, abs_mean, register
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


@register
class LQNet(Quantizer):
    """Nearest level of a learned K-bit basis; basis by QEM (default) or by gradient."""

    name = "lqnet"
    allowed_bits = (1, 2, 3, 4)

    def __init__(self, bits=2, basis_update="qem", momentum=0.9, **kwargs):
        super().__init__(bits=bits, **kwargs)
        self.basis_update = check_choice("basis_update", basis_update, BASIS_UPDATES)
        self.momentum = float(momentum)

    def _build(self, layer, shape, name):
        self.codes = encodings(self.bits, self.signed)
        powers = 2.0 ** np.arange(self.bits, dtype="float32")
        self.basis = self.add_param("basis", initializer="ones", extra_shape=(self.bits,),
                                    trainable=self.basis_update == "gradient",
                                    data_init=lambda x: self._init_basis(x, powers))

    def _init_basis(self, x, powers):
        top = range_init(self, x, 2 ** self.bits)
        unit = top / float(powers.sum())
        return ops.expand_dims(unit, -1) * ops.convert_to_tensor(powers)

    def levels(self, basis):
        """(param_shape..., 2^K) levels of a basis."""
        return ops.matmul(basis, ops.convert_to_tensor(self.codes.T))

    def quantize(self, x, training):
        basis = self.param(self.basis, x, training)
        q, index = nearest_level(x, self.expand(self.levels(basis)))
        if training and self.basis_update == "qem":
            self._qem(x, index, basis)
        self.finish(training)
        return q

    def _qem(self, x, index, basis):
        """v ← m·v + (1−m)·argmin_v ‖Bv − x‖² per parameter; unused bits keep their value."""
        x = ops.stop_gradient(x)
        codes = ops.take(ops.convert_to_tensor(self.codes), ops.reshape(self.per_param(index), (-1,)), axis=0)
        cols = self.per_param(x)
        codes = ops.reshape(codes, (-1, cols.shape[-1], self.bits))
        gram = ops.einsum("mpk,mpj->pkj", codes, codes)
        rhs = ops.einsum("mpk,mp->pk", codes, cols)
        eye = ops.eye(self.bits, dtype=gram.dtype)
        solved = ops.squeeze(ops.solve(gram + 1e-6 * eye, ops.expand_dims(rhs, -1)), -1)
        used = ops.diagonal(gram, axis1=-2, axis2=-1) > 0.5
        current = ops.reshape(basis, (-1, self.bits))
        target = ops.where(used, solved, current)
        new = self.momentum * current + (1.0 - self.momentum) * target
        self.basis.assign(ops.reshape(new, self.basis.shape))

    def get_config(self):
        return {**super().get_config(), "basis_update": self.basis_update, "momentum": self.momentum}
