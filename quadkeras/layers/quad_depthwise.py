"""`QuadDepthwiseConv2D`: a depthwise convolution with quadratic neurons (NHWC)."""

import keras
from keras import ops

from quadkeras.layers.conv_utils import (
    check_kernel_fits,
    conv_output_shape,
    normalize_padding,
    normalize_tuple,
    pad_and_mode,
    padding_config,
)
from quadkeras.layers.quad_base import QuadLayerBase
from quadkeras.utils.validation import check_input_rank, check_positive_int


@keras.saving.register_keras_serializable(package="quadkeras")
class QuadDepthwiseConv2D(QuadLayerBase):
    """Depthwise 2-D convolution whose neurons are quadratic.

    One `ops.depthwise_conv` with a fused kernel `(kh, kw, channels, branches * multiplier)`
    computes every branch. The bilinear `t1` is not offered here. `padding` is `"valid"`,
    `"same"` or explicit (int, pair, or `((top, bottom), (left, right))`, as in
    `QuadConv2D`).

    Example:

    >>> import numpy as np
    >>> layer = QuadDepthwiseConv2D(3, depth_multiplier=2, padding="same")
    >>> tuple(layer(np.zeros((1, 8, 8, 4), "float32")).shape)
    (1, 8, 8, 8)
    """

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1,
                 dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        if self.neuron_spec.bilinear:
            raise ValueError(
                "Invalid neuron='t1' for QuadDepthwiseConv2D: expected one of "
                "'ours', 't2', 't3', 't4', 't2_4'."
            )
        self.kernel_size = normalize_tuple("kernel_size", kernel_size)
        self.strides = normalize_tuple("strides", strides)
        self.padding = normalize_padding(padding)
        self.depth_multiplier = check_positive_int("depth_multiplier", depth_multiplier)
        self.dilation_rate = normalize_tuple("dilation_rate", dilation_rate)

    @property
    def units_per_branch(self):
        return self._channels * self.depth_multiplier

    def _check_input_shape(self, input_shape):
        label = f"QuadDepthwiseConv2D '{self.name}'"
        check_input_rank(label, input_shape, 4)
        check_kernel_fits(label, input_shape, self.kernel_size, self.padding, self.dilation_rate)
        if input_shape[-1] is None:
            raise ValueError("Invalid input shape: QuadDepthwiseConv2D needs a known channel count.")
        self._channels = input_shape[-1]
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: self._channels})

    def _layout_groups(self, input_shape):
        return input_shape[-1]

    def _kernel_layout(self):
        return 1, self.depth_multiplier

    def _kernel_shape(self, input_shape, branches):
        return self.kernel_size + (input_shape[-1], branches * self.depth_multiplier)

    def _linear(self, x, kernel):
        x, mode = pad_and_mode(x, self.padding)
        return ops.depthwise_conv(x, kernel, strides=self.strides, padding=mode,
                                  dilation_rate=self.dilation_rate, data_format="channels_last")

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1] * self.depth_multiplier
        return conv_output_shape(input_shape, channels, self.kernel_size, self.strides,
                                 self.padding, self.dilation_rate)

    def get_config(self):
        config = super().get_config()
        config.update({
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": padding_config(self.padding),
            "depth_multiplier": self.depth_multiplier,
            "dilation_rate": self.dilation_rate,
        })
        return config
