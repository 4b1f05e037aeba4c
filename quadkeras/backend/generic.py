"""The backend hooks' defaults: no native kernel, one replica, eager values are concrete.

`quadkeras.backend.active()` returns the module of the running Keras backend
(`quadkeras.backend.torch`, `.tensorflow`, `.jax`); each starts from these defaults and
replaces the hooks it has a native path for. A hook that returns None (or False) tells the
caller to run its `keras.ops` reference path. This module is also what a backend quadkeras
has no module for (numpy, openvino) gets.

Example:

>>> batch_norm_train(None, None, None, 1e-5) is None
True
>>> replicas_in_sync()
1
"""

import contextlib

# Run an unpadded strided 1x1 conv as a stride-1 conv of the strided slice (torch and
# tensorflow: oneDNN's strided 1x1 NHWC backward is broken; `quadkeras.layers.fused_ops`).
STRIDED_1X1_AS_SLICE = False
# The compiler fuses `where` selects into a reduction (XLA on jax): LSQ's backward keeps them.
SELECT_FORM_FUSES = False
# A built quantizer may run its `call` without Keras' `Layer.__call__`, and an eager model's
# graph may call its layers directly (`quadkeras.training.fast_forward`) (torch: eager, or
# traced by torch.compile: less Python to trace; TF and JAX trace the step once, so the
# bookkeeping costs nothing per step there and stays).
DIRECT_LAYER_CALL = False

__all__ = ["DIRECT_LAYER_CALL", "STRIDED_1X1_AS_SLICE", "SELECT_FORM_FUSES", "all_reduce_sum", "batch_norm_infer",
           "batch_norm_step", "batch_norm_train", "clip_by_global_norm", "conv2d", "enable_determinism",
           "float32_precision", "is_compiling", "is_concrete", "prepare_jit_compile", "process_index",
           "replica_sum", "replicas_in_sync", "resolve_auto_jit", "scaled_round", "sgd_update",
           "update_moving"]


def batch_norm_train(z, gamma, beta, epsilon):
    """(y, batch mean, biased batch variance) of a training BatchNorm over all axes but the
    last, from a native kernel; None: no native kernel (float32 inputs only)."""
    return None


def batch_norm_step(x, gamma, beta, moving_mean, moving_variance, momentum, epsilon):
    """A training BatchNorm's whole step on the variables' own tensors: the normalised `x`,
    the moving statistics updated in place; None: not here (the caller's ops run)."""
    return None


def batch_norm_infer(z, mean, variance, gamma, beta, epsilon):
    """Inference BatchNorm over the last axis from a native kernel; None: none."""
    return None


def update_moving(variable, value, momentum):
    """`variable <- variable * momentum + value * (1 - momentum)` in place; False: not done
    (the caller assigns)."""
    return False


def conv2d(x, kernel, strides, pads, dilation_rate):
    """NHWC conv of `x` with the HWIO `kernel` and explicit `((top, bottom), (left, right))`
    `pads` from a native kernel; None: none."""
    return None


def scaled_round(x, s, low, high, below, above, step_scale=1.0, floor=None, floor_below=None):
    """LSQ's `s * round(clip(x / s, low, high))` with its gradients as one native op (float32
    thresholds `below` / `above` one ulp outside the range); the step used is
    `max(s, floor)` (no floor: `s`; `floor_below`: the float32 just below `floor`) and its
    gradient is scaled by `step_scale`; None: none."""
    return None


def replicas_in_sync():
    """How many replicas share the current training step (1 outside data parallelism)."""
    return 1


def all_reduce_sum(t):
    """Differentiable sum of `t` over the replicas (only called with several replicas)."""
    return t


def process_index():
    """This process's index in a multi-process run as the backend's launcher set it; None: the
    backend has none of its own (the caller reads `TF_CONFIG`'s task)."""
    return None


def replica_sum(grads):
    """Gradients summed over the replicas of a multi-replica optimizer step (unchanged where
    the backend's optimizer reduces them itself)."""
    return grads


def is_compiling():
    """True while a graph compiler traces the calling code where Python state must not be
    read (torch.compile)."""
    return False


def is_concrete(x):
    """True when tensor / variable `x` has a value that can be read without tracing."""
    return True


def sgd_update(optimizer, grads, variables, learning_rate, coefs):
    """`CoupledDecaySGD`'s step (`grad + coef * variable`, then its momentum form) with fused
    multi-tensor kernels; False: not done (the caller runs the per-variable Keras step)."""
    return False


def clip_by_global_norm(optimizer, grads):
    """`optimizer`'s `global_clipnorm` clipping of `grads` in fused kernels; None: not done."""
    return None


def resolve_auto_jit():
    """The `jit_compile` that `jit_compile: auto` means (Keras' own "auto" by default)."""
    return "auto"


def prepare_jit_compile():
    """Settings the backend's compiler needs before `model.compile(jit_compile=True)`."""


def enable_determinism():
    """Make the backend's kernels deterministic (`deterministic: true`)."""


@contextlib.contextmanager
def float32_precision():
    """Full float32 matmuls / convs inside the block (no TF32 / reduced precision)."""
    yield
