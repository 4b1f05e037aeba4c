"""The tensorflow backend's native paths: the `FusedBatchNormV3` op, `tf.distribute`
replicas and gradient sums, op determinism, TF32 control.

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
