"""The torch backend's native paths: fused BatchNorm / conv / LSQ kernels, torch.distributed
replicas, `torch._foreach` optimizer steps, torch.compile (dynamo) settings, TF32 control.

Each function replaces the default of the same name in `quadkeras.backend.generic` (see
there for the contract); `quadkeras.backend.active()` returns this module on torch.

Example:

>>> import numpy as np
>>> z = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
>>> y, mean, var = batch_norm_train(torch.from_numpy(z), torch.ones(3), torch.zeros(3), 1e-5)
>>> bool(np.allclose(mean.numpy(), z.mean(0), atol=1e-6))
True
"""

import contextlib
import math
import os

import torch
import torch.distributed as dist
from keras import ops
from torch.distributed import _functional_collectives as collectives
from torch.nn import functional as F

from quadkeras.backend import keras_private
from quadkeras.backend.generic import *  # noqa: F403 (the defaults this module keeps)
from quadkeras.backend.generic import __all__  # noqa: F401

STRIDED_1X1_AS_SLICE = True
DIRECT_LAYER_CALL = True


# ------------------------------------------------------------------------- BatchNorm
def batch_norm_train(z, gamma, beta, epsilon):
    """One `torch.native_batch_norm` call on a zero-copy NCHW view of the channels-last `z`."""
    zc = torch.movedim(z, -1, 1)  # channels-last memory seen as NC...: no copy
    y, mean, invstd = torch.native_batch_norm(zc, gamma, beta, None, None, True, 0.0, epsilon)
    with torch.no_grad():  # the moving statistics take no gradient (the caller stops it too)
        var = torch.clamp_min(invstd.square().reciprocal() - epsilon, 0.0)
    return torch.movedim(y, 1, -1), mean.detach(), var


def batch_norm_step(x, gamma, beta, moving_mean, moving_variance, momentum, epsilon):
    """`batch_norm_train` and both `update_moving`s in raw torch: one layer's eager training
    step without ~15 Keras-dispatched casts, conversions and variable reads (~0.3 ms of a
    ~0.4 ms layer call on CPU). None for non-float32 tensors, inside a `StatelessScope` or
    under a non-float32 autocast scope (there `variable.value` is not the variable's tensor)."""
    if (not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() < 2
            or keras_private.in_stateless_scope()):
        return None
    active, dtype = keras_private.current_autocast_dtype()
    if active and dtype != "float32":
        return None
    raws = [keras_private.raw_value(v) for v in (gamma, beta, moving_mean, moving_variance)]
    if any(not isinstance(r, torch.Tensor) or r.dtype != torch.float32 for r in raws):
        return None
    gamma, beta, moving_mean, moving_variance = raws
    y, mean, invstd = torch.native_batch_norm(torch.movedim(x, -1, 1), gamma, beta, None, None,
                                              True, 0.0, epsilon)
    with torch.no_grad():  # v <- v + (1 - momentum) (new - v): two kernels for the pair
        var = invstd.pow(-2).sub_(epsilon).clamp_min_(0.0)
        torch._foreach_lerp_([moving_mean, moving_variance], [mean, var], 1.0 - momentum)
    return torch.movedim(y, 1, -1)


def batch_norm_infer(z, mean, variance, gamma, beta, epsilon):
    """One `F.batch_norm` kernel on the channels-last view."""
    stats = (ops.convert_to_tensor(t) for t in (mean, variance, gamma, beta))
    y = F.batch_norm(z.movedim(-1, 1), *stats, False, 0.0, epsilon)
    return y.movedim(1, -1)


def update_moving(variable, value, momentum):
    """Two in-place kernels on the variable's tensor (Keras' `assign` of the same expression
    costs ~10 Python-level ops); False inside a `StatelessScope` or under autocast."""
    if keras_private.in_stateless_scope():
        return False
    raw = keras_private.raw_value(variable)  # the tensor itself, not an autocast copy
    if raw is None or variable.value is not raw or raw.dtype != value.dtype:
        return False
    with torch.no_grad():
        raw.mul_(momentum).add_(value, alpha=1.0 - momentum)
    return True


# ------------------------------------------------------------------------ convolution
def conv2d(x, kernel, strides, pads, dilation_rate):
    """`F.conv2d` with native padding on the channels-last view of the NHWC input (Keras'
    `ops.conv` makes two full copies of the input, an explicit `ops.pad` a third)."""
    if len(x.shape) != 4:
        return None
    xc = ops.convert_to_tensor(x).permute(0, 3, 1, 2)  # NHWC memory == channels-last NCHW
    w = ops.convert_to_tensor(kernel).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    (top, bottom), (left, right) = pads
    if top != bottom or left != right:
        xc = F.pad(xc, (left, right, top, bottom))
        top = left = 0
    groups = xc.shape[1] // w.shape[1]
    y = F.conv2d(xc, w, None, tuple(strides), (top, left), tuple(dilation_rate), groups)
    return y.permute(0, 2, 3, 1)


# ---------------------------------------------------------------------- LSQ rounding
class ScaledRound(torch.autograd.Function):
    """LSQ's rounding as one autograd Function: the straight-through mask is one
    `hardtanh_backward` kernel (thresholds one float32 ulp outside the clip range: exactly
    LSQ's inclusive range, no bool tensors, whose CPU kernels are 3-4x slower) and the step
    gradient two dot products. The step's floor (`max(step, floor)`) and gradient scale are
    applied here too, where as separate ops they cost ~10 Python-dispatched scalar ops a
    quantizer and step in eager mode. Defined at import, so torch.compile never traces a
    class body."""

    @staticmethod
    def forward(ctx, x, step, low, high, below, above, step_scale, floor, floor_below):
        s = step if floor is None else torch.clamp_min(step, floor)
        v = x / s
        r = torch.clamp(v, low, high).round_()
        ctx.save_for_backward(v, r, step)
        ctx.bounds, ctx.step_scale, ctx.floor_below = (below, above), step_scale, floor_below
        return r * s

    @staticmethod
    def backward(ctx, upstream):
        v, r, step = ctx.saved_tensors
        compiling = torch.compiler.is_compiling()
        if not compiling and not upstream.is_contiguous():
            # a kernel's gradient comes through the convolution's layout permutation: made
            # contiguous once here, the two `reshape(-1)` below are views and `dx` has the
            # kernel's own layout (else two copies here and one more in the gradient's
            # accumulation into the variable)
            upstream = upstream.contiguous()
        # the straight-through mask: upstream where below < v < above, else 0
        dx = torch.ops.aten.hardtanh_backward(upstream, v, *ctx.bounds)
        # d/ds: (round(v) - v) inside the range, the clip level outside; summed to s
        if compiling:
            # inductor: plain sums over the tensor's own axes. A `reshape(-1)` fixes the order
            # of the reduction, and where `upstream` comes in another memory layout (a
            # kernel's gradient from the convolution) its fused kernel then reads it element
            # by element, with index arithmetic: ~4x slower (ResNet-20 LSQ W4A4 at batch 2:
            # that fused kernel took 2.1 ms of a ~11 ms compiled step, as sums 0.9 ms)
            axes = tuple(range(v.dim() - 1)) if step.dim() == 1 and step.shape[0] != 1 else None
            ds = (upstream * r).sum(dim=axes) - (dx * v).sum(dim=axes)
        elif step.dim() == 1 and step.shape[0] != 1:
            channels = step.shape[0]
            ds = ((upstream * r).reshape(-1, channels).sum(0)
                  - (dx * v).reshape(-1, channels).sum(0))
        else:
            ds = torch.dot(upstream.reshape(-1), r.reshape(-1)) - torch.dot(dx.reshape(-1), v.reshape(-1))
        ds = ds.reshape(step.shape)
        if ctx.floor_below is not None:  # max(step, floor)'s gradient, one kernel: 1 from the
            # floor up (at the floor itself 1, as tf.maximum and torch.clamp_min give), 0 below;
            # as 7 separate ops it was ~80 us of a ~400 us quantizer call at 2x8x8x16 on CPU.
            # The threshold comes in computed: nothing here may touch state outside the
            # Function, or dynamo breaks the compiled graph at every quantizer
            ds = torch.ops.aten.hardtanh_backward(ds, step, ctx.floor_below, math.inf)
        if ctx.step_scale != 1.0:
            ds = ds * ctx.step_scale
        return dx, ds, None, None, None, None, None, None, None


def scaled_round(x, s, low, high, below, above, step_scale=1.0, floor=None, floor_below=None):
    """`ScaledRound` applied to `x` with step `max(s, floor)` (scalar or per last-axis
    channel), the step's gradient scaled by `step_scale`; `floor_below`: the float32 just
    below `floor` (the step's gradient is 0 at or below it)."""
    return ScaledRound.apply(x, s, low, high, below, above, step_scale, floor, floor_below)


# ---------------------------------------------------------------- data parallelism
def replicas_in_sync():
    """The torch.distributed world size (1 when no process group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def process_index():
    """torchrun's `RANK` (0 when unset: a single process)."""
    return int(os.environ.get("RANK", "0"))


def all_reduce_sum(t):
    """torch's functional all-reduce, which has a registered autograd (the backward
    all-reduces the gradient); `torch.distributed.nn.functional.all_reduce` is its
    deprecated predecessor."""
    return collectives.wait_tensor(collectives.all_reduce(t, "sum", dist.group.WORLD))


# ----------------------------------------------------------------------- tracing
def is_compiling():
    """True while `torch.compile` (dynamo) traces the code that asks."""
    return torch.compiler.is_compiling()


def is_concrete(x):
    """False on the meta device (Keras' shape inference) and under `torch.compile`."""
    on_meta = isinstance(x, torch.Tensor) and x.device.type == "meta"
    return not (on_meta or is_compiling())


# --------------------------------------------------------------------- optimizer
def _tensors(variables):
    """The variables' own tensors (in place updates land in the variables), read without
    `Variable.value`'s autocast and scope checks (~5 us each, ~100 reads a ResNet-20 step);
    `value` inside a `StatelessScope`, where the scope holds the values."""
    if keras_private.in_stateless_scope():
        return [v.value for v in variables]
    return [keras_private.raw_value(v) for v in variables]


def _same_dtypes(grads, params):
    return all(g is not None and g.dtype == p.dtype for g, p in zip(grads, params))


def _decay(grads, params, coefs):
    """`grad + coef * variable` for every variable, one `torch._foreach_add` per coefficient
    (PyTorch's SGD does the same) instead of three small ops per variable."""
    out = list(grads)
    with torch.no_grad():
        for coef in set(coefs) - {0.0}:
            idx = [i for i, c in enumerate(coefs) if c == coef]
            summed = torch._foreach_add([grads[i] for i in idx], [params[i] for i in idx], alpha=coef)
            for i, g in zip(idx, summed):
                out[i] = g
    return out


def _negated(learning_rate, params):
    """-learning_rate as a 0-d tensor on the parameters' device and dtype. The foreach kernels
    take it as a tensor operand, not as `alpha=`: a tensor `alpha` is read back with `.item()`,
    a device sync every step on a GPU and a graph break ("data dependent operator") under
    torch.compile, which split the compiled train step in two."""
    return -ops.convert_to_tensor(learning_rate).to(dtype=params[0].dtype, device=params[0].device)


def _momentum_buffers(optimizer, variables):
    momentums = optimizer.momentums
    return _tensors([momentums[keras_private.variable_index(optimizer, v)] for v in variables])


def _torch_form(optimizer, grads, variables, params, learning_rate):
    """The torch-form step with `torch._foreach` kernels (what `torch.optim.SGD` runs)."""
    bufs = _momentum_buffers(optimizer, variables)
    neg_lr = _negated(learning_rate, params)
    with torch.no_grad():
        torch._foreach_mul_(bufs, optimizer.momentum)
        torch._foreach_add_(bufs, grads)
        if optimizer.nesterov:
            torch._foreach_add_(params, torch._foreach_mul(grads, neg_lr))
            torch._foreach_add_(params, torch._foreach_mul(bufs, neg_lr * optimizer.momentum))
        else:
            torch._foreach_add_(params, torch._foreach_mul(bufs, neg_lr))


def _keras_form(optimizer, grads, variables, params, learning_rate):
    """The keras-form step with `torch._foreach` kernels: the update Keras' own torch SGD
    runs (a subclass of `keras.optimizers.SGD` is not swapped for it and would otherwise
    update each variable with five small ops: 16 of 61 ms in a profiled QResNet14 step at
    batch 2)."""
    neg_lr = _negated(learning_rate, params)
    with torch.no_grad():
        lr_grads = torch._foreach_mul(grads, neg_lr)  # -lr * g
        if optimizer.momentum == 0:
            torch._foreach_add_(params, lr_grads)
            return
        bufs = _momentum_buffers(optimizer, variables)
        torch._foreach_mul_(bufs, optimizer.momentum)
        torch._foreach_add_(bufs, lr_grads)
        if optimizer.nesterov:  # w += m * v - lr * g
            torch._foreach_add_(params, lr_grads)
            torch._foreach_add_(params, bufs, alpha=optimizer.momentum)
        else:
            torch._foreach_add_(params, bufs)


def sgd_update(optimizer, grads, variables, learning_rate, coefs):
    """The whole step in `torch._foreach` kernels where every gradient has its variable's
    dtype; with mixed dtypes only the torch momentum form (Keras' per-variable loop would
    apply the keras form), after a per-variable decay."""
    torch_form = optimizer.momentum_form == "torch" and optimizer.momentum != 0
    params = _tensors(variables)
    if _same_dtypes(grads, params):
        grads = _decay(grads, params, coefs)
    elif torch_form:
        grads = [g if c == 0.0 else g + ops.cast(v, g.dtype) * c for g, v, c in zip(grads, variables, coefs)]
    else:
        return False
    (_torch_form if torch_form else _keras_form)(optimizer, grads, variables, params, learning_rate)
    return True


def clip_by_global_norm(optimizer, grads):
    """Keras' `clip_by_global_norm` (scale = clip * min(1/norm, 1/clip); NaN when the norm is
    not finite) with one `torch._foreach_norm`, when `global_clipnorm` is the only clipping."""
    clip_norm = optimizer.global_clipnorm
    if not clip_norm or optimizer.clipnorm or optimizer.clipvalue or any(g is None for g in grads):
        return None
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        scale = clip_norm * torch.minimum(1.0 / norm, torch.tensor(1.0 / clip_norm, device=norm.device))
        scale = torch.where(torch.isfinite(norm), scale, torch.tensor(float("nan"), device=norm.device))
        return torch._foreach_mul(grads, scale.to(grads[0].dtype))


# ------------------------------------------------------------------- compilation
def resolve_auto_jit():
    """`torch.compile` where a CUDA device is present, eager on a CPU (there the compile costs
    minutes of first step and is slower wherever the step is compute-bound)."""
    return bool(torch.cuda.is_available())


def prepare_jit_compile():
    """Dynamo settings for torch.compile of a Keras model: static shapes (dynamo's automatic
    dynamic shapes recompile a frame seen with a second batch size with symbolic sizes, on
    which inductor fails: ResNet-20, "cannot determine truth value of Relational"), with room
    for one cache entry per frame and shape. A zoo ResNet-20 train step compiles to 2 graphs,
    split at `loss.backward()` (`torch._dynamo.explain`, docs/speed_log.md)."""
    config = torch._dynamo.config
    config.automatic_dynamic_shapes = False
    # Some Keras ops (`ops.pad`, so `ZeroPadding2D`; `ops.cond`) build a new auto-named
    # `Operation` on every eager call: its name comes from a global counter that dynamo
    # guarded on, so every step recompiled (ResNet-20: ~5 s a step). Traced as a constant:
    # no guard, the throwaway op's name is fixed at trace time.
    torch.compiler.assume_constant_result(keras_private.op_name_uniquifier())
    config.cache_size_limit = max(config.cache_size_limit, 256)
    config.accumulated_cache_size_limit = max(config.accumulated_cache_size_limit, 4096)


@contextlib.contextmanager
def float32_precision():
    """cuDNN convs and CUDA matmuls without TF32 inside the block."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
