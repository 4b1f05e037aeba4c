"""Raw-torch forwards of the hottest float layers, for the fast forward (issue #26).

`quadkeras.training.fast_forward` already calls each layer's `call` without Keras'
`Layer.__call__`; the `call` itself still goes through `keras.ops` (`convert_to_tensor`,
`Variable.value` with its autocast check, dtype standardisation: ~100-200 us a layer on
CPU, most of what an eager overhead-bound torch step spends beyond plain PyTorch).
`native_layer_call(layer)` gives, for a layer whose configuration a few torch calls compute
exactly, a function `run(x, training)` that computes its `call` on the variables' own tensors
(`keras_private.raw_value`: the `torch.nn.Parameter` whose `.grad` Keras' trainer reads), or None
for any other layer. `run` returns None (the caller then runs `layer.call`) when `x` is not a
float32 torch tensor, or when the layer's state says so at call time (a BatchNormalization
under data-parallel training). The caller uses it only where the forward runs float32
variables outside any `StatelessScope` and outside a non-float32 autocast scope.

Covered, each only in the configuration stated:

- `keras.layers.Conv2D` and `quadkeras.layers.Conv2D`: channels-last, activation linear or
  relu, padding "valid", explicit, or "same" where it is symmetric (stride 1, odd kernel) or
  a 1x1 kernel (strided unpadded 1x1 runs on the strided slice, as `fused_ops.conv2d`).
  `F.conv2d` on the zero-copy channels-last view, bias inside the kernel.
- `quadkeras.layers.QuadConv2D` with the `ours` neuron, one group, no `recompute`, the same
  paddings, activation linear or relu: the fused convolution, its per-branch BatchNorm (as
  BatchNormalization below) and `a * b + c` (QResNet14's layer).
- `quadkeras.layers.BatchNormalization` (scale and center on, last axis, no renorm):
  training through the backend's `batch_norm_step`, inference one `F.batch_norm`.
- `keras.layers.ReLU` (default arguments), `keras.layers.Activation` (relu / linear),
  `keras.layers.Add`, `keras.layers.ZeroPadding2D` / `GlobalAveragePooling2D`
  (channels-last) and `keras.layers.Dense` (linear / relu, 2-D input).
- `quadkeras.quantize.QuantizeWrapper` of one of those Conv2D / Dense / QuadConv2D with an input and / or
  kernel quantizer and no other: the layer's math as above on the quantized kernel. An
  initialised per-tensor or per-channel LSQ quantizer runs as one `ScaledRound` call on its
  step's tensor (what `LSQ.fake_quantize` computes on torch, without ~10 Keras-dispatched
  ops); any other quantizer, or an LSQ whose step is pending or which observes, runs its own
  `__call__`.

`tests/test_torch_native_layers.py` checks each against Keras' own `call`, forward and
gradients.

Example:

>>> import keras, torch
>>> relu = keras.layers.ReLU()
>>> run = native_layer_call(relu)
>>> run(torch.tensor([[-1.0, 2.0]]), True).tolist()
[[0.0, 2.0]]
>>> native_layer_call(keras.layers.ReLU(max_value=6.0)) is None
True
"""

import keras
import torch
from torch.nn import functional as F

from quadkeras.backend import keras_private
from quadkeras.backend.torch import ScaledRound
from quadkeras.layers.batch_norm import BatchNormalization
from quadkeras.layers.conv2d import Conv2D
from quadkeras.layers.fused_ops import (batch_norm_step, batch_norm_train, explicit_padding,
                                        just_outside, update_moving)
from quadkeras.layers.quad_conv import QuadConv2D
from quadkeras.quantize.wrapper import QuantizeWrapper
from quadkeras.quantizers.base import PENDING, POSITIVE_FLOOR
from quadkeras.quantizers.lsq import LSQ

_F32 = torch.float32


def native_layer_call(layer):
    """`run(x, training)` computing `layer.call(x, training=training)` in raw torch, or None."""
    make = _MAKERS.get(type(layer))
    return None if make is None else make(layer)


def _float32(x):
    return isinstance(x, torch.Tensor) and x.dtype is _F32


def _activation(function):
    """torch's function for a Keras activation (None: not covered)."""
    if function is keras.activations.linear or function is None:
        return lambda y: y
    if function is keras.activations.relu:
        return torch.relu
    return None


def _raw(variable):
    return keras_private.raw_value(variable)


# ---------------------------------------------------------------------------- conv
def _conv2d(layer):
    return _with_own_kernel(layer, _conv_math(layer), rank=4)


def _with_own_kernel(layer, compute, rank):
    """`run(x, training)`: `compute(x, kernel, training)` with the layer's own kernel tensor."""
    if compute is None:
        return None

    def run(x, training):
        if not _float32(x) or x.dim() != rank:
            return None
        return compute(x, _own_kernel(layer), training)
    return run


def _own_kernel(layer):
    """The kernel tensor of a Keras Conv / Dense (its `kernel` property adds LoRA and
    quantization logic) or of a quadratic layer (a plain variable)."""
    if isinstance(layer, QuadConv2D):
        return _raw(layer.kernel)
    return _raw(keras_private.kernel_variable(layer))


def _conv_math(layer):
    """`f(x, kernel, training)`: the layer's `call` with `kernel` (HWIO) in place of its own."""
    act = _activation(layer.activation)
    if (act is None or layer.data_format != "channels_last" or layer.rank != 2
            or getattr(layer, "lora_enabled", False)):
        return None
    conv = _torch_conv(layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate,
                       layer.groups)
    if conv is None:
        return None
    use_bias = layer.use_bias

    def compute(x, kernel, training):
        return act(conv(x, kernel, _raw(layer.bias) if use_bias else None)).permute(0, 2, 3, 1)
    return compute


def _torch_conv(size, strides, padding, dilation, groups):
    """`conv(x, kernel, bias)`: the NHWC convolution of `x` with an HWIO `kernel` as an NCHW
    view of channels-last memory (F.conv2d's layout), or None where the padding is not one
    symmetric zero padding ("same" with a stride or an even kernel, uneven explicit pads)."""
    size, strides, dilation = tuple(size), tuple(strides), tuple(dilation)
    unpadded = padding in ("valid", "same") or (
        not isinstance(padding, str) and all(int(p) == 0 for pair in padding for p in pair))
    sliced = strides != (1, 1) and size == (1, 1) and unpadded
    step = strides if sliced else None  # exact: a 1x1 kernel reads only the pixels its stride lands on
    if sliced:
        strides = (1, 1)
    explicit = explicit_padding(padding, size, strides, dilation)  # None: asymmetric "same"
    if explicit is None or any(before != after for before, after in explicit):
        return None
    pads = tuple(int(before) for before, _ in explicit)

    def conv(x, kernel, bias):
        if step is not None:
            x = x[:, ::step[0], ::step[1], :]
        w = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
        return F.conv2d(x.permute(0, 3, 1, 2), w, bias, strides, pads, dilation, groups)
    return conv


def _quad_conv(layer):
    return _with_own_kernel(layer, _quad_conv_math(layer), rank=4)


def _quad_conv_math(layer):
    """`f(x, kernel, training)` for a `QuadConv2D` with the `ours` neuron (one fused convolution, a
    BatchNorm per branch channel, `a * b + c`), one group, no `recompute`; None otherwise."""
    act = _activation(layer.activation)
    if (act is None or layer.neuron != "ours" or layer.groups != 1 or layer.recompute
            or layer.compute_dtype != "float32"):
        return None
    conv = _torch_conv(layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate, 1)
    if conv is None:
        return None
    use_bias = layer.use_bias
    stats = (layer.branch_moving_mean, layer.branch_moving_variance, layer.branch_gamma,
             layer.branch_beta)

    def compute(x, kernel, training):
        if layer.fused_output_hook is not None:
            return None  # an export hook reads the fused output: the layer's own call
        z = conv(x, kernel, _raw(layer.bias) if use_bias else None)
        if training:
            y = batch_norm_step(z.permute(0, 2, 3, 1), layer.branch_gamma, layer.branch_beta,
                                *stats[:2], layer.bn_momentum, layer.bn_epsilon)
            if y is None:  # data-parallel: statistics of the global batch, as the layer does
                y, mean, var = batch_norm_train(z.permute(0, 2, 3, 1), _raw(layer.branch_gamma),
                                                _raw(layer.branch_beta), layer.bn_epsilon)
                update_moving(layer.branch_moving_mean, mean.detach(), layer.bn_momentum)
                update_moving(layer.branch_moving_variance, var.detach(), layer.bn_momentum)
        else:
            y = F.batch_norm(z, *(_raw(v) for v in stats), False, 0.0,
                             layer.bn_epsilon).permute(0, 2, 3, 1)
        a, b, c = y.chunk(3, dim=-1)
        return act(a * b + c)
    return compute


# ----------------------------------------------------------------------- BatchNorm
def _batch_norm(layer):
    if not layer.scale or not layer.center or layer.renorm or layer.synchronized:
        return None

    def run(x, training):
        if not _float32(x) or layer.axis % x.dim() != x.dim() - 1:
            return None
        if training and layer.trainable:
            return batch_norm_step(x, layer.gamma, layer.beta, layer.moving_mean,
                                   layer.moving_variance, layer.momentum, layer.epsilon)
        stats = [_raw(v) for v in (layer.moving_mean, layer.moving_variance, layer.gamma, layer.beta)]
        return F.batch_norm(x.movedim(-1, 1), *stats, False, 0.0, layer.epsilon).movedim(1, -1)
    return run


# ------------------------------------------------------------------ element-wise
def _relu_layer(layer):
    if layer.max_value is not None or layer.negative_slope != 0 or layer.threshold != 0:
        return None
    return _unary(torch.relu)


def _activation_layer(layer):
    act = _activation(layer.activation)
    return None if act is None else _unary(act)


def _unary(function):
    def run(x, training):
        return function(x) if _float32(x) else None
    return run


def _add(layer):
    def run(xs, training):
        if not all(_float32(x) and x.dim() == xs[0].dim() for x in xs):
            return None
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y
    return run


# --------------------------------------------------------------- shape and pooling
def _zero_padding(layer):
    if layer.data_format != "channels_last":
        return None
    (top, bottom), (left, right) = layer.padding
    pads = (0, 0, left, right, top, bottom)

    def run(x, training):
        return F.pad(x, pads) if _float32(x) and x.dim() == 4 else None
    return run


def _global_average(layer):
    if layer.data_format != "channels_last":
        return None
    keepdim = layer.keepdims

    def run(x, training):
        return x.mean(dim=(1, 2), keepdim=keepdim) if _float32(x) and x.dim() == 4 else None
    return run


def _dense(layer):
    return _with_own_kernel(layer, _dense_math(layer), rank=2)


def _dense_math(layer):
    act = _activation(layer.activation)
    if act is None or getattr(layer, "lora_enabled", False):
        return None
    use_bias = layer.use_bias

    def compute(x, kernel, training):
        y = torch.matmul(x, kernel)
        return act(y + _raw(layer.bias) if use_bias else y)
    return compute


# --------------------------------------------------------------- quantize wrappers
def _quantize_wrapper(wrapper):
    """A `QuantizeWrapper` of a float32 Conv2D / Dense / QuadConv2D (`ours`) with input and
    kernel quantizers only:
    the layer's math on raw tensors; LSQ quantizers as one `ScaledRound` call each (others
    through their own `__call__`); the wrapper's casts are float32 no-ops here."""
    inner = wrapper.layer
    if type(inner) in (keras.layers.Conv2D, Conv2D):
        compute, rank = _conv_math(inner), 4
    elif type(inner) is QuadConv2D:
        compute, rank = _quad_conv_math(inner), 4
    elif type(inner) is keras.layers.Dense:
        compute, rank = _dense_math(inner), 2
    else:
        return None
    others = (wrapper.output_quantizer, wrapper.branch_quantizer, wrapper.product_quantizer,
              wrapper.bias_quantizer)
    if (compute is None or any(q is not None for q in others) or inner.compute_dtype != "float32"
            or wrapper._views_kernel()):
        return None
    quantize_input = _quantizer_call(wrapper.input_quantizer)
    kernel_quantizer = wrapper.kernel_quantizer
    quantize_kernel = _quantizer_call(kernel_quantizer)
    generic_kernel = kernel_quantizer is not None and kernel_quantizer.holds_value

    def run(x, training):
        if not _float32(x) or x.dim() != rank or getattr(inner, "fused_output_hook", None) is not None:
            return None  # (before the quantizers run: an observer must see a tensor once)
        x = quantize_input(x, training)
        kernel = (wrapper._kernel(training) if generic_kernel
                  else quantize_kernel(_own_kernel(inner), training))
        return compute(x, kernel, training)
    return run


def _quantizer_call(quantizer):
    """`f(x, training)`: the quantizer's output (identity for None)."""
    if quantizer is None:
        return lambda x, training: x
    native = _lsq(quantizer)

    def call(x, training):
        y = None if native is None else native(x, training)
        return quantizer(x, training=training) if y is None else y
    return call


_FLOOR_BELOW = just_outside(POSITIVE_FLOOR, POSITIVE_FLOOR)[0]  # ScaledRound's floor threshold


def _lsq(quantizer):
    """LSQ's `fake_quantize` as one `ScaledRound` (per-tensor or per-channel step, no input
    normalisation), once its step is initialised; None (generic call) otherwise."""
    if (type(quantizer) is not LSQ or quantizer.normalize is not None
            or quantizer.granularity not in ("per_tensor", "per_channel")):
        return None
    constants = {}  # (bits, signed, shape) -> (low, high, below, above, gradient scale)

    def run(x, training):
        if (not quantizer.built or quantizer.init_state == PENDING
                or (quantizer.observer is not None and not training)):
            return None
        key = (quantizer.bits, quantizer.signed, tuple(x.shape))
        known = constants.get(key)
        if known is None:
            qn, qp = quantizer.q_range()
            scale = quantizer.gradient_scale(x)
            if not isinstance(scale, float):
                return None  # a size known only at run time
            known = constants[key] = (-float(qn), float(qp), *just_outside(-float(qn), float(qp)), scale)
        step = _raw(quantizer.step)
        if step.dtype is not _F32:
            return None
        return ScaledRound.apply(x, step, *known, POSITIVE_FLOOR, _FLOOR_BELOW)
    return run


_MAKERS = {keras.layers.Conv2D: _conv2d, Conv2D: _conv2d, BatchNormalization: _batch_norm,
           keras.layers.ReLU: _relu_layer, keras.layers.Activation: _activation_layer,
           keras.layers.Add: _add, keras.layers.ZeroPadding2D: _zero_padding,
           keras.layers.GlobalAveragePooling2D: _global_average, keras.layers.Dense: _dense,
           QuantizeWrapper: _quantize_wrapper, QuadConv2D: _quad_conv}
