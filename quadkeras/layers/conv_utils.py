"""Shape arithmetic shared by the convolutional quadratic layers.

Example:

>>> conv_output_length(32, kernel=3, stride=2, padding="same", dilation=1)
16
"""

import numpy as np

from quadkeras.utils.validation import check_choice, check_positive_int


def normalize_tuple(name, value, n=2):
    """An int or a sequence of `n` positive ints -> tuple of `n` ints."""
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n:
        raise ValueError(f"Invalid {name}={value!r}: expected an int or {n} ints.")
    for v in values:
        check_positive_int(name, v)
    return values


def normalize_padding(padding):
    return check_choice("padding", str(padding).lower(), ("valid", "same"))


def conv_output_length(length, kernel, stride, padding, dilation):
    if length is None:
        return None
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return (length + stride - 1) // stride
    return max(0, (length - effective) // stride + 1)


def conv_output_shape(input_shape, channels, kernel_size, strides, padding, dilation_rate):
    batch, height, width = input_shape[0], input_shape[1], input_shape[2]
    out_h = conv_output_length(height, kernel_size[0], strides[0], padding, dilation_rate[0])
    out_w = conv_output_length(width, kernel_size[1], strides[1], padding, dilation_rate[1])
    return (batch, out_h, out_w, channels)


def patch_identity_kernel(kernel_size, channels):
    """Conv kernel that copies each input patch into channels, ordered (kh, kw, c)."""
    size = kernel_size[0] * kernel_size[1] * channels
    return np.eye(size, dtype="float32").reshape(kernel_size[0], kernel_size[1], channels, size)
