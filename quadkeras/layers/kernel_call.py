"""`call_with_kernel(layer, inputs, kernel)`: run a layer with a substitute kernel.

The one place that knows how each supported layer applies its kernel, for everything that
swaps the kernel for a quantized one (`QuantizeWrapper`, BSQ's bit planes included). Like
Keras' own `Conv2D.call`, it goes through the layer's `convolution_op`, so a subclass that
overrides that op (quadkeras' `Conv2D`) keeps it; quadratic layers run their own
`call_with_kernel` (fused branches, per-branch BN) with the optional branch / product
quantizer hooks.

`SUPPORTED` is the one list of layer types whose kernel can be substituted (first-order
Keras `Conv2D` / `DepthwiseConv2D` / `Dense` and the quadratic `QUAD_LAYERS`).

Example:

>>> import numpy as np, keras
>>> dense = keras.layers.Dense(2, use_bias=False)
>>> _ = dense(np.ones((1, 3), "float32"))
>>> keras.ops.convert_to_numpy(call_with_kernel(dense, np.ones((1, 3), "float32"), np.ones((3, 2), "float32"))).tolist()
[[3.0, 3.0]]
"""

import keras
from keras import ops

from quadkeras.layers import QUAD_LAYERS
FIRST_ORDER_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
SUPPORTED = QUAD_LAYERS + FIRST_ORDER_LAYERS


def supports_kernel_call(layer):
    """True for the layer types `call_with_kernel` (and so the quantize wrappers) supports."""
    return isinstance(layer, SUPPORTED)


def call_with_kernel(layer, inputs, kernel, training=None, branch_quantizer=None,
                     product_quantizer=None, compute_dtype=None, bias=None):
    """Output of `layer` on `inputs` with `kernel` in place of `layer.kernel`.

    `branch_quantizer` / `product_quantizer`: quadratic layers only (see
    `QuadLayerBase.call_with_kernel`). `compute_dtype`: the dtype first-order math runs in
    (default: the layer's; a wrapper passes its own). `bias`: first-order layers only, a
    tensor in place of `layer.bias` (e.g. BSQ's bit-quantized bias).
    """
    if isinstance(layer, QUAD_LAYERS):
        return layer.call_with_kernel(inputs, kernel, training=training,
                                      branch_quantizer=branch_quantizer,
                                      product_quantizer=product_quantizer)
    if not isinstance(layer, FIRST_ORDER_LAYERS):
        raise ValueError(f"Invalid layer {layer.name!r} ({type(layer).__name__}): expected one of "
                         f"{', '.join(cls.__name__ for cls in SUPPORTED)}.")
    dtype = compute_dtype or layer.compute_dtype
    x = ops.cast(inputs, dtype)
    kernel = ops.cast(kernel, dtype)
    if isinstance(layer, keras.layers.Dense):
        y = ops.matmul(x, kernel)
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        y = ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding,
                               dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    else:
        y = layer.convolution_op(x, kernel)  # the layer's own conv (quadkeras Conv2D: the shim's)
    if layer.use_bias:
        bias = ops.cast(layer.bias if bias is None else bias, dtype)
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            bias = ops.reshape(bias, (1, -1) + (1,) * (len(y.shape) - 2))
        y = y + bias
    return layer.activation(y) if layer.activation is not None else y
