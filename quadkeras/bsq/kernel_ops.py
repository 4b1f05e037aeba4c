"""Backend-agnostic (keras.ops) pieces of the BSQ forward pass and regulariser.

* `plane_weights(num_planes, precision)`: 2^b / (2^n - 1) for active planes, 0 beyond.
* `ste_quantize(w, precision)`: BSQ's `bit_STE`: clip to [-1, 1], round |w| to the
  n-bit grid, identity gradient (straight-through).
* `bit_group_lasso(pos, neg, precision)`: sum over active bits b of
  sqrt(eps + ||P_b||^2 + ||N_b||^2) (one group per bit plane of the layer).

Example:

>>> import numpy as np
>>> from keras import ops
>>> w = ops.convert_to_tensor(np.array([0.3, -0.9], "float32"))
>>> (ops.convert_to_numpy(ste_quantize(w, 2.0)) * 3).round().tolist()  # grid k/3
[1.0, -3.0]
"""

from keras import ops

from quadkeras.quantizers.ste import ste

EPSILON = 1e-8


def plane_weights(num_planes, precision):
    """Bit weights 2^b / (2^n - 1) for b < n (n = precision, a scalar tensor), 0 beyond."""
    exps = ops.power(2.0, ops.arange(num_planes, dtype="float32"))
    precision = ops.cast(precision, "float32")
    mask = ops.cast(ops.less(ops.arange(num_planes, dtype="float32"), precision), "float32")
    return exps * mask / (ops.power(2.0, precision) - 1.0)


def reconstruct(pos, neg, precision):
    """Unrounded normalised kernel sum_b (P_b - N_b) 2^b / (2^n - 1)."""
    return ops.sum((pos - neg) * plane_weights(pos.shape[-1], precision), axis=-1)


def ste_quantize(w, precision):
    """Round w (clipped to [-1, 1]) to the n-bit grid; gradient passes straight through."""
    top = ops.power(2.0, ops.cast(precision, w.dtype)) - 1.0
    clipped = ops.clip(w, -1.0, 1.0)
    return ste(w, ops.sign(clipped) * ops.round(ops.abs(clipped) * top) / top)


def bit_group_lasso(pos, neg, precision, epsilon=EPSILON):
    """Group Lasso over the active bit planes (one group = one bit of the whole layer)."""
    axes = tuple(range(len(pos.shape) - 1))
    norms = ops.sqrt(epsilon + ops.sum(ops.square(pos), axis=axes) + ops.sum(ops.square(neg), axis=axes))
    mask = ops.cast(ops.less(ops.arange(pos.shape[-1], dtype="float32"), ops.cast(precision, "float32")), norms.dtype)
    return ops.sum(norms * mask)
