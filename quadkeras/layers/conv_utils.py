"""Shape arithmetic and padding shared by the convolutional quadratic layers.

`padding` is `"valid"`, `"same"` (Keras' convention: for stride > 1 the extra pixel goes
bottom/right), or explicit zero padding as `torch.nn.Conv2d` takes it: an int `p`
(p on every side), a pair `(ph, pw)`, or `((top, bottom), (left, right))`.

Example:

>>> conv_output_length(32, kernel=3, stride=2, padding="same", dilation=1)
16
>>> normalize_padding(1)
((1, 1), (1, 1))
>>> conv_output_length(32, kernel=3, stride=2, padding=(1, 1), dilation=1)
16
"""

import numpy as np
from keras import ops

from quadkeras.utils.validation import check_choice, check_positive_int

PADDING_CHOICES = "'valid', 'same', an int p, a pair (ph, pw) or ((top, bottom), (left, right))"


def normalize_tuple(name, value, n=2):
    """An int or a sequence of `n` positive ints -> tuple of `n` ints."""
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n:
        raise ValueError(f"Invalid {name}={value!r}: expected an int or {n} ints.")
    for v in values:
        check_positive_int(name, v)
    return values


def _non_negative(value, original):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"Invalid padding={original!r}: expected {PADDING_CHOICES} "
                         "(non-negative ints).")
    return int(value)


def normalize_padding(padding):
    """`"valid"` / `"same"`, or explicit padding as `((top, bottom), (left, right))` ints.

    Explicit paddings of zero on every side come back as `"valid"`.
    """
    if isinstance(padding, str):
        return check_choice("padding", padding.lower(), ("valid", "same"))
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        p = _non_negative(padding, padding)
        pads = ((p, p), (p, p))
    elif isinstance(padding, (list, tuple)) and len(padding) == 2:
        if all(isinstance(p, (list, tuple)) for p in padding):
            if any(len(p) != 2 for p in padding):
                raise ValueError(f"Invalid padding={padding!r}: expected {PADDING_CHOICES}.")
            pads = tuple(tuple(_non_negative(v, padding) for v in p) for p in padding)
        else:
            ph, pw = (_non_negative(v, padding) for v in padding)
            pads = ((ph, ph), (pw, pw))
    else:
        raise ValueError(f"Invalid padding={padding!r}: expected {PADDING_CHOICES}.")
    return "valid" if pads == ((0, 0), (0, 0)) else pads


def padding_config(padding):
    """JSON-friendly form of a normalized padding (lists instead of tuples)."""
    return padding if isinstance(padding, str) else [list(p) for p in padding]


def pad_and_mode(x, padding):
    """(input zero-padded as `padding` asks, the `ops.conv` padding mode to use with it)."""
    if isinstance(padding, str):
        return x, padding
    (top, bottom), (left, right) = padding
    return ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]]), "valid"


def conv_output_length(length, kernel, stride, padding, dilation):
    if length is None:
        return None
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return (length + stride - 1) // stride
    if not isinstance(padding, str):
        length = length + sum(padding)
    return max(0, (length - effective) // stride + 1)


def check_kernel_fits(layer, input_shape, kernel_size, padding, dilation_rate):
    """Refuse, at build, a kernel larger than its (padded) input: a one-line ValueError naming
    the layer, the kernel size and the input size (Keras' Conv2D refuses it at build too;
    the backends fail only at call, with their own traceback). Unknown sizes pass.

    >>> check_kernel_fits("QuadConv2D 'q'", (None, 3, 3, 2), (5, 5), "valid", (1, 1))
    Traceback (most recent call last):
    ...
    ValueError: Invalid kernel_size=(5, 5) for QuadConv2D 'q': larger than its 3x3 input (padding='valid'); expected a kernel of at most 3x3 there, more padding or padding='same'.
    """
    if padding == "same":
        return
    sizes = tuple(input_shape[1:3])
    if None in sizes:
        return
    pads = (0, 0) if isinstance(padding, str) else tuple(sum(p) for p in padding)
    padded = tuple(n + p for n, p in zip(sizes, pads))
    effective = tuple((k - 1) * d + 1 for k, d in zip(kernel_size, dilation_rate))
    if all(e <= n for e, n in zip(effective, padded)):
        return
    dilated = "" if effective == tuple(kernel_size) else f", {effective[0]}x{effective[1]} dilated"
    with_pad = "" if padded == sizes else f", {padded[0]}x{padded[1]} padded"
    raise ValueError(
        f"Invalid kernel_size={tuple(kernel_size)} for {layer}: larger than its "
        f"{sizes[0]}x{sizes[1]} input (padding={padding_config(padding)!r}{with_pad}{dilated}); "
        f"expected a kernel of at most {padded[0]}x{padded[1]} there, more padding or "
        "padding='same'.")


def conv_output_shape(input_shape, channels, kernel_size, strides, padding, dilation_rate):
    batch, height, width = input_shape[0], input_shape[1], input_shape[2]
    pad_h, pad_w = (padding, padding) if isinstance(padding, str) else padding
    out_h = conv_output_length(height, kernel_size[0], strides[0], pad_h, dilation_rate[0])
    out_w = conv_output_length(width, kernel_size[1], strides[1], pad_w, dilation_rate[1])
    return (batch, out_h, out_w, channels)


def torch_equivalent_padding(kernel_size, strides, dilation_rate=(1, 1)):
    """Padding giving PyTorch's `padding=(k-1)//2 * dilation` (what CIFAR nets use).

    Returns `"same"` where Keras' `"same"` is the identical function (stride 1, odd kernel),
    else the explicit symmetric padding (stride-2 3x3 convs: `((1, 1), (1, 1))`).

    >>> torch_equivalent_padding((3, 3), (2, 2))
    ((1, 1), (1, 1))
    >>> torch_equivalent_padding((3, 3), (1, 1)), torch_equivalent_padding((1, 1), (2, 2))
    ('same', 'valid')
    """
    pads = tuple((k - 1) // 2 * d for k, d in zip(kernel_size, dilation_rate))
    if pads == (0, 0):
        return "valid"
    odd = all(k % 2 == 1 for k in kernel_size)
    if odd and tuple(strides) == (1, 1):
        return "same"
    return tuple((p, p) for p in pads)


def patch_identity_kernel(kernel_size, channels):
    """Conv kernel that copies each input patch into channels, ordered (kh, kw, c)."""
    size = kernel_size[0] * kernel_size[1] * channels
    return np.eye(size, dtype="float32").reshape(kernel_size[0], kernel_size[1], channels, size)
