"""`Conv2D`: Keras' layer whose convolution goes through `quadkeras.layers.fused_ops.conv2d`.

A drop-in subclass of `keras.layers.Conv2D` (same weights, config and numerics). On torch
the NHWC input reaches `F.conv2d` as a zero-copy channels-last view (Keras' `ops.conv`
copies it twice: to contiguous NCHW, then back to channels-last memory); on the other
backends it is `ops.conv` unchanged. The zoo models use it for their first-order convs.

Example:

>>> import numpy as np
>>> conv = Conv2D(4, 3, padding="same", use_bias=False)
>>> tuple(conv(np.zeros((2, 8, 8, 3), "float32")).shape)
(2, 8, 8, 4)
"""

import keras

from quadkeras.layers.fused_ops import conv2d


@keras.saving.register_keras_serializable(package="quadkeras")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (same arguments) with the shim's convolution for NHWC inputs."""

    def convolution_op(self, inputs, kernel):
        if self.data_format != "channels_last":
            return super().convolution_op(inputs, kernel)
        return conv2d(inputs, kernel, tuple(self.strides), self.padding, tuple(self.dilation_rate))
