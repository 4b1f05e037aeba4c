"""Backend shim: the few ops of the quadratic layers that have a faster native kernel.

The native kernels live in `quadkeras.backend` (`active()`: the running backend's module);
every function here has a `keras.ops` fallback that is the reference numerics; the native paths compute the same
function (same biased batch variance, same epsilon) with fewer kernels and copies:

- `batch_norm_train(z, gamma, beta, epsilon)`: training BatchNorm over every axis but the
  last, returning `(normalised, batch_mean, batch_variance)` so the caller can update its
  moving statistics. torch: one `torch.native_batch_norm` call on a zero-copy NCHW view
  (one fused backward kernel instead of a chain of element-wise ops); tensorflow: the
  `FusedBatchNormV3` op (its Bessel-corrected variance is scaled back to the biased one);
  jax / other dtypes: `keras.ops.moments` + an affine, which XLA fuses anyway.
  Under data-parallel training (several replicas per step) the statistics are those of the
  global batch (`quadkeras.layers.replica_moments`, synchronised BN) on every backend.
- `batch_norm_infer(z, mean, variance, gamma, beta, epsilon)`: the inference affine; torch:
  one `F.batch_norm` kernel, elsewhere `ops.batch_normalization`.
- `update_moving(variable, value, momentum)`: `variable <- variable * momentum + value *
  (1 - momentum)` (BatchNorm's moving statistics). torch: two in-place kernels on the
  variable's tensor (Keras' `assign` of the same expression costs ~10 Python-level ops, which
  bind a GPU step); elsewhere, and inside a `StatelessScope`, `variable.assign`.
- `native_scaled_round(x, s, low, high)`: LSQ's `s * round(clip(x / s, low, high))` with its
  gradients (see `quadkeras.quantizers.ste.scaled_round`, the reference). torch: one autograd
  Function whose straight-through mask is one `hardtanh_backward` kernel with thresholds one
  float32 ulp outside the clip range (exactly LSQ's inclusive range; no bool tensors, whose
  CPU kernels are 3-4x slower) and whose step gradient is two dot products; tensorflow: one
  `tf.custom_gradient` op whose mask is one `FakeQuantWithMinMaxArgsGradient` kernel where
  the range is a b-bit one (`high - low` = 2^b - 1, or 2^b - 2: narrow), else a computed
  mask; None on jax (XLA fuses the reference). (A NaN input passes its gradient on torch
  where the reference zeroes it; its output is NaN either way.)
- `conv2d(x, kernel, strides, padding, dilation_rate)`: NHWC convolution with explicit
  `((top, bottom), (left, right))` padding. torch: `F.conv2d` with native padding on the
  channels-last view of the NHWC input (keras' `ops.conv` makes two full copies of the
  input, and the explicit `ops.pad` a third); elsewhere `ops.pad` + `ops.conv`.
  A 1x1 kernel with a stride > 1 and no padding (the ResNet shortcut) runs on torch and
  tensorflow as a stride-1 conv of `x[:, ::sh, ::sw, :]`: exactly the same function, but it
  keeps oneDNN off its strided 1x1 NHWC backward-weights kernel, which writes past its
  workspace (upstream: uxlfoundation/oneDNN#6035; wrong kernel gradients for in_channels
  < 8 on AVX2, segfaults on AVX-512 up to in_channels 15). Measured here: torch 2.13's
  oneDNN 3.12 on an AVX2 host gave such a shortcut's kernel gradient errors of 0.1-2.5x its
  size (in_channels 3-4).

Example:

>>> import numpy as np
>>> z = np.random.default_rng(0).standard_normal((8, 4, 4, 6)).astype("float32")
>>> y, mean, var = batch_norm_train(z, np.ones(6, "float32"), np.zeros(6, "float32"), 1e-5)
>>> bool(np.allclose(np.asarray(mean), z.mean(axis=(0, 1, 2)), atol=1e-5))
True
>>> bool(np.allclose(np.asarray(var), z.var(axis=(0, 1, 2)), rtol=1e-4))
True
>>> tuple(conv2d(z, np.zeros((3, 3, 6, 2), "float32"), (1, 1), ((1, 1), (1, 1)), (1, 1)).shape)
(8, 4, 4, 2)
"""

import math

import numpy as np
import keras
from keras import ops

from quadkeras import backend
from quadkeras.layers.replica_moments import global_moments, replicas_in_sync


def _is_float32(*tensors):
    return all(keras.backend.standardize_dtype(t.dtype) == "float32" for t in tensors)


# ------------------------------------------------------------------------- BatchNorm
def batch_norm_train(z, gamma, beta, epsilon):
    """Batch-statistics BatchNorm over all axes but the last: (y, mean, variance).

    `mean` / `variance` are float32 (biased variance, as Keras' BatchNormalization uses);
    `y = (z - mean) * gamma / sqrt(variance + epsilon) + beta` in `z`'s dtype.
    """
    z, gamma, beta = (ops.convert_to_tensor(t) for t in (z, gamma, beta))
    synced = global_moments(z)  # data-parallel training: statistics of the global batch
    if synced is not None:
        return _normalise(z, gamma, beta, epsilon, *synced)
    if _is_float32(z, gamma, beta) and len(z.shape) >= 2:
        native = backend.active().batch_norm_train(z, gamma, beta, epsilon)
        if native is not None:
            return native
    return _batch_norm_train_generic(z, gamma, beta, epsilon)


def _batch_norm_train_generic(z, gamma, beta, epsilon):
    axes = list(range(len(z.shape) - 1))
    mean, var = ops.moments(ops.cast(z, "float32"), axes=axes)
    return _normalise(z, gamma, beta, epsilon, mean, var)


def _normalise(z, gamma, beta, epsilon, mean, var):
    m, v = ops.cast(mean, z.dtype), ops.cast(var, z.dtype)
    scale = gamma * ops.rsqrt(v + epsilon)
    return z * scale + (beta - m * scale), mean, var


def batch_norm_step(x, gamma, beta, moving_mean, moving_variance, momentum, epsilon):
    """A training BatchNorm's normalised `x` with `moving_mean` / `moving_variance` updated (as
    `batch_norm_train` + `update_moving`) in one native call, or None where the backend has
    none or the step is data-parallel (then the caller runs those two)."""
    if replicas_in_sync() != 1:
        return None
    return backend.active().batch_norm_step(x, gamma, beta, moving_mean, moving_variance,
                                            momentum, epsilon)


def update_moving(variable, value, momentum):
    """`variable <- variable * momentum + value * (1 - momentum)`; `value` carries no gradient."""
    if not backend.active().update_moving(variable, value, momentum):
        variable.assign(variable * momentum + value * (1.0 - momentum))


def batch_norm_infer(z, mean, variance, gamma, beta, epsilon):
    """Inference BatchNorm over the last axis with given statistics:
    `(z - mean) * gamma / sqrt(variance + epsilon) + beta`. torch: one `F.batch_norm` kernel
    on the channels-last view; elsewhere `ops.batch_normalization` (what Keras' layer uses)."""
    z = ops.convert_to_tensor(z)
    if len(z.shape) >= 2 and _is_float32(z):
        native = backend.active().batch_norm_infer(z, mean, variance, gamma, beta, epsilon)
        if native is not None:
            return native
    return ops.batch_normalization(z, mean, variance, axis=-1, offset=beta, scale=gamma, epsilon=epsilon)


# ------------------------------------------------------------------------ convolution
def conv2d(x, kernel, strides, padding, dilation_rate):
    """NHWC conv, HWIO kernel (groups = in_channels / kernel in-channels); `padding` is
    `"valid"`, `"same"` or `((top, bottom), (left, right))`."""
    x, strides = _unit_stride_1x1(x, kernel, strides, padding)
    pads = explicit_padding(padding, kernel.shape[:2], strides, dilation_rate)
    if pads is not None:
        native = backend.active().conv2d(x, kernel, strides, pads, dilation_rate)
        if native is not None:
            return native
    if not isinstance(padding, str):
        (top, bottom), (left, right) = padding
        x, padding = ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]]), "valid"
    return ops.conv(x, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate,
                    data_format="channels_last")


def _unit_stride_1x1(x, kernel, strides, padding):
    """(x[:, ::sh, ::sw, :], (1, 1)) for an unpadded strided 1x1 conv on torch / tensorflow
    (oneDNN's strided 1x1 backward is broken: module docstring); else (x, strides).
    Exact: a 1x1 conv reads only the pixels its stride lands on, and unpadded ("valid",
    zero pads, or "same", which pads a 1x1 kernel by 0) the output is ceil(size / stride)
    either way."""
    strides = tuple(int(s) for s in strides)
    if (not backend.active().STRIDED_1X1_AS_SLICE or len(x.shape) != 4 or strides == (1, 1)
            or tuple(int(k) for k in kernel.shape[:2]) != (1, 1)):
        return x, strides
    if not (isinstance(padding, str) or all(int(p) == 0 for pair in padding for p in pair)):
        return x, strides
    return x[:, ::strides[0], ::strides[1], :], (1, 1)


def explicit_padding(padding, kernel_size, strides, dilation_rate):
    """((top, bottom), (left, right)) for `padding`, or None where "same" is asymmetric."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        if tuple(strides) != (1, 1) or any(int(k) % 2 == 0 for k in kernel_size):
            return None
        return tuple(((int(k) - 1) // 2 * d,) * 2 for k, d in zip(kernel_size, dilation_rate))
    return padding


# ---------------------------------------------------------------------- LSQ rounding
def native_scaled_round(x, s, low, high, step_scale=1.0, floor=None):
    """`s' * round(clip(x / s', low, high))` with `s' = max(s, floor)` (no floor: `s`), LSQ's
    gradients and `s`'s gradient scaled by `step_scale` (a Python float), as one native op, or
    None where there is none (then the caller's `keras.ops` version runs). `s`: a scalar or
    one value per channel (last axis)."""
    if not _is_float32(x, s):
        return None
    per_channel = len(s.shape) == 1 and s.shape[0] == x.shape[-1] and s.shape[0] != 1
    if not (per_channel or math.prod(s.shape) == 1):
        return None
    below, above = just_outside(float(low), float(high))
    floor = None if floor is None else float(floor)
    floor_below = None if floor is None else just_outside(floor, floor)[0]
    return backend.active().scaled_round(x, s, float(low), float(high), below, above,
                                         float(step_scale), floor, floor_below)


def select_form_fuses():
    """True where the compiler fuses `where` selects into a reduction (XLA on jax), so LSQ's
    `keras.ops` backward keeps its select form; elsewhere it derives d/ds from d/dx."""
    return backend.active().SELECT_FORM_FUSES


_BOUNDS = {}  # (low, high) -> thresholds: a handful of pairs per model


def just_outside(low, high):
    """float32 thresholds one ulp outside [low, high]: for float32 `v`, the strict test
    `below < v < above` is exactly the inclusive `low <= v <= high`. A plain dict cache,
    which torch.compile reads as a constant (it would trace through `functools.cache`)."""
    bounds = _BOUNDS.get((low, high))
    if bounds is None:
        below = np.nextafter(np.float32(low), np.float32(-np.inf))
        above = np.nextafter(np.float32(high), np.float32(np.inf))
        bounds = _BOUNDS[(low, high)] = (float(below), float(above))
    return bounds


backend.active()  # the backend's kernels load at import, so torch.compile never traces an import
