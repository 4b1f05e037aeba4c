"""Straight-through-estimator helpers shared by every quantizer (the one place STE lives).

Each helper returns the quantized *value* in the forward pass while the backward pass sees
a chosen differentiable surrogate:

- `ste(x, q)`: value `q`, gradient of `x` (identity).
- `round_ste(x)`: value `round(x)`, gradient 1.
- `grad_scale(x, g)`: value `x`, gradient scaled by `g` (LSQ's step-size gradient scale).
- `nearest_level(x, levels, clip=...)`: value = nearest entry of `levels` (last axis),
  gradient 1 to the picked level and identity to `x`, zeroed outside the level range
  (`clip="both"`), above the top level only (`"above"`) or nowhere (`None`).

Example:

>>> import numpy as np
>>> from keras import ops
>>> float(ops.convert_to_numpy(round_ste(ops.convert_to_tensor(np.float32(1.4)))))
1.0
"""

from keras import ops


def ste(x, q):
    """Forward exactly `q`, backward identity to `x` (no gradient through `q`)."""
    return ops.stop_gradient(q) + (x - ops.stop_gradient(x))


def round_ste(x):
    """Round half to even in the forward pass, identity gradient."""
    return ste(x, ops.round(x))


def grad_scale(x, g):
    """Forward `x`, backward `g * dL/dx` (LSQ gradient scaling)."""
    scaled = x * g
    return ops.stop_gradient(x - scaled) + scaled


def nearest_level(x, levels, clip="both"):
    """Snap `x` to the nearest of `levels` (`levels` broadcasts against `x[..., None]`).

    Returns `(q, index)`: `q` has gradient 1 w.r.t. the chosen level and a straight-through
    gradient w.r.t. `x`, zero outside [min level, max level] (`clip="both"`), above the max
    level only (`clip="above"`) or nowhere (`clip=None`); `index` is the level index.
    """
    count = levels.shape[-1]
    index = ops.argmin(ops.abs(ops.expand_dims(x, -1) - levels), axis=-1)
    picked = ops.sum(ops.one_hot(index, count, dtype=levels.dtype) * levels, axis=-1)
    through = x
    if clip is not None:
        through = ops.minimum(through, ops.stop_gradient(ops.max(levels, axis=-1)))
    if clip == "both":
        through = ops.maximum(through, ops.stop_gradient(ops.min(levels, axis=-1)))
    return picked + ops.cast(through - ops.stop_gradient(through), picked.dtype), index
