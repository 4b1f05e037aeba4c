"""Global-batch BatchNorm statistics under data-parallel training (synchronised BN).

When a training step runs as several replicas (`quadkeras.training.distribute`), each one
sees a slice of the global batch. `global_moments(z)` then returns the mean and (biased)
variance over the WHOLE global batch, differentiably, with the backend's own collectives:

- tensorflow, inside a `tf.distribute` replica context with > 1 replicas: the replica
  context's `all_reduce` (differentiable; what Keras' `synchronized=True` BN uses);
- torch, inside an initialised `torch.distributed` process group of > 1 processes:
  torch's functional `all_reduce` (autograd-aware; `torch.nn.SyncBatchNorm` itself only runs
  on GPU and only on torch's own BN modules);
- jax (`keras.distribution.DataParallel`): nothing to do, the batch is one global array
  sharded by XLA, so plain moments are already global.

Anywhere else it returns None and the caller uses its usual single-device kernel.

Example:

>>> import numpy as np
>>> global_moments(np.ones((4, 3), "float32")) is None  # one device: nothing to sync
True
"""

from keras import ops

from quadkeras import backend


def replicas_in_sync():
    """How many replicas share the current training step (1 outside data parallelism)."""
    return backend.active().replicas_in_sync()


def global_moments(z):
    """(mean, biased variance) of `z` over all axes but the last and over every replica, as
    float32; None when the step is not data-parallel (use local moments). Two passes (mean,
    then centred squares), so a large mean does not cancel the variance."""
    if replicas_in_sync() == 1:
        return None
    z = ops.cast(z, "float32")
    axes = list(range(len(z.shape) - 1))
    local_count = ops.cast(ops.size(z) // z.shape[-1], "float32")
    totals = _all_reduce_sum(ops.concatenate([ops.sum(z, axis=axes), ops.reshape(local_count, (1,))]))
    count = totals[-1]
    mean = totals[:-1] / count
    var = _all_reduce_sum(ops.sum(ops.square(z - mean), axis=axes)) / count
    return mean, var


def _all_reduce_sum(t):
    """Differentiable sum over the replicas (the gradient is the sum of the replicas' ones)."""
    return backend.active().all_reduce_sum(t)
