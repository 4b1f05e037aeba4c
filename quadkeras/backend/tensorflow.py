"""The tensorflow backend's native paths: the `FusedBatchNormV3` op, LSQ's rounding with a
one-kernel straight-through mask, `tf.distribute` replicas and gradient sums, op determinism,
TF32 control.

Each function replaces the default of the same name in `quadkeras.backend.generic` (see
there for the contract); `quadkeras.backend.active()` returns this module on tensorflow.

Example:

>>> replicas_in_sync()  # outside a tf.distribute strategy
1
"""

import contextlib

import tensorflow as tf

from quadkeras.backend.generic import *  # noqa: F403 (the defaults this module keeps)
from quadkeras.backend.generic import __all__  # noqa: F401

STRIDED_1X1_AS_SLICE = True


def batch_norm_train(z, gamma, beta, epsilon):
    """The `FusedBatchNormV3` op on a 4-D NHWC view (its Bessel-corrected variance is scaled
    back to the biased one)."""
    shape = tf.shape(z)
    z4 = tf.reshape(z, [1, -1, 1, shape[-1]])  # FusedBatchNorm wants 4-D NHWC; same reduction
    empty = tf.constant([], tf.float32)
    y, mean, var = tf.raw_ops.FusedBatchNormV3(
        x=z4, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=epsilon,
        exponential_avg_factor=1.0, data_format="NHWC", is_training=True)[:3]
    n = tf.cast(tf.shape(z4)[1], tf.float32)
    var = tf.stop_gradient(var) * ((n - 1.0) / n)  # the op returns the unbiased variance
    return tf.reshape(y, shape), tf.stop_gradient(mean), var


def scaled_round(x, s, low, high, below, above, step_scale=1.0, floor=None, floor_below=None):
    """LSQ's rounding as one `tf.custom_gradient` op whose backward is five kernels: the
    straight-through mask is TensorFlow's `FakeQuantWithMinMaxArgsGradient` (one kernel; its
    range `[low, high]` nudges to itself exactly when `high - low` is `2^b - 1`, or `2^b - 2`
    with `narrow_range`: unit scale, integer zero point), and the step gradient two products
    summed. The step floor and the gradient scale are applied inside. (The `keras.ops` form,
    a float mask from two compares, took 14 kernels: ~2.2 against ~1.2 ms at 128x32x32x16 in
    a `tf.function` on 2 CPU cores.) `below` / `above` are torch's thresholds, unused here."""
    mask_args = _fake_quant_mask_args(low, high)
    per_channel = len(s.shape) == 1 and s.shape[0] != 1
    axes = list(range(len(x.shape) - 1)) if per_channel else None

    @tf.custom_gradient
    def fused(x, s):
        step = s if floor is None else tf.maximum(s, floor)
        v = x / step
        r = tf.round(tf.clip_by_value(v, low, high))

        def grad(upstream):
            if mask_args is None:
                inside = tf.logical_and(v >= low, v <= high)
                dx = upstream * tf.cast(inside, upstream.dtype)
            else:
                dx = tf.raw_ops.FakeQuantWithMinMaxArgsGradient(
                    gradients=upstream, inputs=v, min=low, max=high, **mask_args)
            ds = tf.reduce_sum(upstream * r, axis=axes) - tf.reduce_sum(dx * v, axis=axes)
            ds = tf.reshape(ds, tf.shape(s))
            if step_scale != 1.0:
                ds = ds * step_scale
            if floor is not None:  # max(s, floor)'s gradient: s's from the floor up (tf.maximum)
                ds = tf.where(s >= floor, ds, tf.zeros_like(ds))
            return dx, ds

        return r * step, grad

    # variables are read here, outside: custom_gradient refuses a function that reads them
    return fused(tf.convert_to_tensor(x), tf.convert_to_tensor(s))


def _fake_quant_mask_args(low, high):
    """`num_bits` / `narrow_range` for which FakeQuant's nudged range is exactly
    `[low, high]` (integers, `low <= 0 <= high`), else None (then the mask is computed)."""
    if not (low <= 0 <= high and low == int(low) and high == int(high)):
        return None
    span = int(high - low)
    for narrow_range, levels in ((False, span + 1), (True, span + 2)):
        bits = levels.bit_length() - 1
        if levels == 1 << bits and 2 <= bits <= 16:
            return {"num_bits": bits, "narrow_range": narrow_range}
    return None


def _replica_context():
    """The multi-replica `tf.distribute` replica context of this step, else None."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_replica_context()


def replicas_in_sync():
    """`num_replicas_in_sync` of the current `tf.distribute` replica context (1 outside one)."""
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def all_reduce_sum(t):
    """The replica context's SUM all-reduce (differentiable)."""
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, t)


def replica_sum(grads):
    """Each replica holds its share of the gradient: summed here (the all-reduce Keras' TF
    optimizer would do after clipping), so clipping and decay see the global gradient."""
    context = _replica_context()
    present = [g for g in grads if g is not None]
    if context is None or context.num_replicas_in_sync == 1 or not present:
        return grads
    summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(summed) for g in grads]


def is_concrete(x):
    """True when executing eagerly (not inside a `tf.function` trace)."""
    return tf.executing_eagerly()


def enable_determinism():
    """`tf.config.experimental.enable_op_determinism()`."""
    tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def float32_precision():
    """TensorFlow's TF32 execution off inside the block."""
    saved = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(saved)
