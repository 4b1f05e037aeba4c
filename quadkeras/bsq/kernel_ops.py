"""Backend-agnostic (keras.ops) pieces of the BSQ forward pass and regulariser.

* `plane_weights(num_planes, precision)`: 2^b / (2^n - 1) for active planes, 0 beyond.
* `ste_quantize(w, precision)`: BSQ's `bit_STE`: clip to [-1, 1], round |w| to the
  n-bit grid, identity gradient (straight-through).
* `bit_group_lasso(pos, neg, precision)`: sum over active bits b of
  sqrt(eps + ||P_b||^2 + ||N_b||^2) (one group per bit plane of the layer).
* `run_with_kernel(layer, x, kernel, training)`: run a quadkeras quad layer, a Keras
  `Conv2D` / `DepthwiseConv2D` or `Dense` with a substitute kernel.

Example:

>>> import numpy as np
>>> from keras import ops
>>> w = ops.convert_to_tensor(np.array([0.3, -0.9], "float32"))
>>> (ops.convert_to_numpy(ste_quantize(w, 2.0)) * 3).round().tolist()  # grid k/3
[1.0, -3.0]
"""

import keras
from keras import ops

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
    q = ops.sign(clipped) * ops.round(ops.abs(clipped) * top) / top
    return w + ops.stop_gradient(q - w)


def bit_group_lasso(pos, neg, precision, epsilon=EPSILON):
    """Group Lasso over the active bit planes (one group = one bit of the whole layer)."""
    axes = tuple(range(len(pos.shape) - 1))
    norms = ops.sqrt(epsilon + ops.sum(ops.square(pos), axis=axes) + ops.sum(ops.square(neg), axis=axes))
    mask = ops.cast(ops.less(ops.arange(pos.shape[-1], dtype="float32"), ops.cast(precision, "float32")), norms.dtype)
    return ops.sum(norms * mask)


def run_with_kernel(layer, inputs, kernel, training=None):
    """Output of `layer` on `inputs` with `kernel` in place of `layer.kernel`."""
    if hasattr(layer, "call_with_kernel"):
        return layer.call_with_kernel(inputs, kernel, training=training)
    x = ops.cast(inputs, layer.compute_dtype)
    kernel = ops.cast(kernel, layer.compute_dtype)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        y = ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding,
                               data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    elif isinstance(layer, keras.layers.Conv2D):
        y = ops.conv(x, kernel, strides=layer.strides, padding=layer.padding,
                     data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    elif isinstance(layer, keras.layers.Dense):
        y = ops.matmul(x, kernel)
    else:
        raise ValueError(f"Invalid layer {layer.name!r} ({type(layer).__name__}): expected Conv2D, "
                         "DepthwiseConv2D, Dense or a quadkeras quadratic layer.")
    if layer.use_bias:
        bias = ops.cast(layer.bias, layer.compute_dtype)
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            bias = ops.reshape(bias, (1, -1) + (1,) * (len(y.shape) - 2))
        y = y + bias
    return layer.activation(y) if layer.activation is not None else y
