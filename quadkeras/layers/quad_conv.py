"""`QuadConv2D`: a 2-D convolution with quadratic neurons (NHWC)."""

import keras
from keras import ops

from quadkeras.layers.conv_utils import (
    check_kernel_fits,
    conv_output_shape,
    normalize_padding,
    normalize_tuple,
    padding_config,
    patch_identity_kernel,
)
from quadkeras.layers.fused_ops import conv2d
from quadkeras.layers.quad_base import QuadLayerBase
from quadkeras.utils.validation import check_input_rank, check_positive_int


@keras.saving.register_keras_serializable(package="quadkeras")
class QuadConv2D(QuadLayerBase):
    """2-D convolution whose neurons are quadratic (see `quadkeras.layers.neurons`).

    All branches run as ONE convolution with a fused kernel of shape
    `(kh, kw, in_channels // groups, branches * filters)`.

    Args:
        filters: output channels.
        kernel_size, strides, dilation_rate: int or pair of ints.
        padding: `"valid"`, `"same"`, or explicit zero padding like `torch.nn.Conv2d`'s: an
            int `p`, a pair `(ph, pw)` or `((top, bottom), (left, right))`. PyTorch's
            `padding=1` on a stride-2 3x3 conv is `padding=1` here, not `"same"` (which pads
            only bottom/right for stride 2 and so samples a grid shifted by one pixel).
        groups: channel groups, as in `keras.layers.Conv2D` (`groups=in_channels` and
            `filters=in_channels` is a depthwise quadratic conv).
        **kwargs: `neuron`, `use_bias`, `recompute`, ... of `QuadLayerBase`.

    Example:

    >>> import numpy as np
    >>> layer = QuadConv2D(8, 3, padding="same", neuron="ours")
    >>> tuple(layer(np.zeros((2, 16, 16, 3), "float32")).shape)
    (2, 16, 16, 8)
    >>> tuple(QuadConv2D(8, 3, strides=2, padding=1)(np.zeros((2, 16, 16, 3), "float32")).shape)
    (2, 8, 8, 8)
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 groups=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.kernel_size = normalize_tuple("kernel_size", kernel_size)
        self.strides = normalize_tuple("strides", strides)
        self.padding = normalize_padding(padding)
        self.dilation_rate = normalize_tuple("dilation_rate", dilation_rate)
        self.groups = check_positive_int("groups", groups)
        if self.filters % self.groups:
            raise ValueError(
                f"Invalid groups={groups}: filters={filters} must be divisible by groups."
            )
        if self.neuron_spec.bilinear and self.groups != 1:
            raise ValueError("Invalid groups for neuron='t1': the bilinear form needs groups=1.")

    @property
    def units_per_branch(self):
        return self.filters

    def _check_input_shape(self, input_shape):
        label = f"{type(self).__name__} '{self.name}'"
        check_input_rank(label, input_shape, 4)
        check_kernel_fits(label, input_shape, self.kernel_size, self.padding, self.dilation_rate)
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"Invalid input channels={channels} for groups={self.groups}: "
                "the channel count must be known and divisible by groups."
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})

    def _layout_groups(self, input_shape):
        return self.groups

    def _kernel_shape(self, input_shape, branches):
        return self.kernel_size + (input_shape[-1] // self.groups, branches * self.filters)

    def _linear(self, x, kernel):
        return conv2d(x, kernel, self.strides, self.padding, self.dilation_rate)

    def _patch_size(self, input_shape):
        self._patch_kernel = patch_identity_kernel(self.kernel_size, input_shape[-1])
        return self._patch_kernel.shape[-1]

    def _patches(self, x):
        return self._linear(x, ops.cast(self._patch_kernel, x.dtype))

    def compute_output_shape(self, input_shape):
        return conv_output_shape(input_shape, self.filters, self.kernel_size, self.strides,
                                 self.padding, self.dilation_rate)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": padding_config(self.padding),
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
        })
        return config
