"""Dead product-gate channels of `ours` quadratic layers, made int8-convertible for export.

A channel of an `ours` layer whose inference branch-BN scale `gamma / sqrt(var + eps)` is
exactly 0 (a quadratized layer's product gate that never moved, a pruned channel) outputs the
constant `beta`. The LiteRT converter folds that BN scale into the conv's per-channel kernel
fake-quant, so the channel's int8 scale becomes 0 and it stops with "scale out of expressed type
range" (the conv then stays float32). `live_dead_channels` rewrites each such channel, only
while the export traces, into the same function with a non-zero scale: kernel (and fused bias)
channel 0, BN gamma 1 and mean 0 (the output is still `beta`, exactly), and the kernel
fake-quant's range on that channel set to the layer's largest channel range (an all-zero
channel quantizes to exact zeros under any range; a normal-sized scale keeps the int32 bias
`beta / (input_scale * weight_scale)` in range). Other channels are untouched.

Example:

>>> with live_dead_channels(qat_model):  # doctest: +SKIP
...     write_saved_model(qat_model, "/tmp/qat_sm")
"""

import contextlib

import numpy as np
from keras import ops

from quadkeras.quantize import QuantizeWrapper, quantized_layers
from quadkeras.quantize.wrapper import QUAD_LAYERS
from quadkeras.quantizers import FakeQuant


def _ours_fake_quant_wrappers(model):
    return [w for w in quantized_layers(model)
            if isinstance(w, QuantizeWrapper) and isinstance(w.layer, QUAD_LAYERS)
            and w.layer.neuron_spec.branch_bn and isinstance(w.kernel_quantizer, FakeQuant)
            and w.kernel_quantizer.granularity == "per_channel"]


def dead_channels(layer):
    """Fused output channels of an `ours` layer whose inference branch-BN scale is exactly 0."""
    gamma = ops.convert_to_numpy(layer.branch_gamma)
    var = ops.convert_to_numpy(layer.branch_moving_variance)
    return np.flatnonzero(gamma / np.sqrt(var + layer.bn_epsilon) == 0)


@contextlib.contextmanager
def live_dead_channels(model):
    """Within the block, dead `ours` channels of `model`'s per-channel fake-quant wrappers are
    rewritten as the module doc says; every variable is restored on exit."""
    saved = []
    try:
        for wrapper in _ours_fake_quant_wrappers(model):
            layer, q = wrapper.layer, wrapper.kernel_quantizer
            dead = dead_channels(layer)
            view = ops.convert_to_numpy(wrapper._kernel_view(layer.kernel))
            if not len(dead) or view.shape[-1] != layer.branch_gamma.shape[0]:
                continue
            variables = [layer.kernel, layer.branch_gamma, layer.branch_moving_mean, q.min_var, q.max_var]
            variables += [layer.bias] if layer.use_bias else []
            saved += [(v, ops.convert_to_numpy(v).copy()) for v in variables]
            view[..., dead] = 0.0
            layer.kernel.assign(ops.convert_to_numpy(wrapper._kernel_unview(view)))
            for v, value in ((layer.branch_gamma, 1.0), (layer.branch_moving_mean, 0.0)):
                v.assign(_set(v, dead, value))
            if layer.use_bias:
                layer.bias.assign(_set(layer.bias, dead, 0.0))
            top = float(np.max(ops.convert_to_numpy(q.max_var)))
            q.max_var.assign(_set(q.max_var, dead, top))
            q.min_var.assign(_set(q.min_var, dead, -top))
        yield
    finally:
        for v, value in reversed(saved):
            v.assign(value)


def _set(variable, channels, value):
    out = ops.convert_to_numpy(variable).copy()
    out.reshape(-1, out.shape[-1])[:, channels] = value
    return out
