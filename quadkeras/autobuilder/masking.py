"""Deterministic weight masking for the auto-builder's probes, restored exactly afterwards.

A probe zeroes exactly `round(ratio * size)` entries of each masked weight (the layer's
`kernel`, for quadratic layers the fused all-branch kernel, plus `linear_kernel` of `t1`
neurons), chosen by a NumPy generator seeded from `(seed, crc32(layer name))`: the same
layer gets the same mask in every run, whatever the probing order. No rescale (QuadraLib's
`F.dropout` rescaled by 2x). The saved NumPy arrays are assigned back on exit.

Example:

>>> import numpy as np, keras
>>> layer = keras.layers.Dense(4, name="d")
>>> layer.build((None, 5))
>>> before = keras.ops.convert_to_numpy(layer.kernel)
>>> with masked(layer, ratio=0.5, seed=0):
...     int((keras.ops.convert_to_numpy(layer.kernel) == 0).sum())
10
>>> bool(np.array_equal(keras.ops.convert_to_numpy(layer.kernel), before))
True
"""

import contextlib
import zlib

import numpy as np
from keras import ops

from quadkeras.summary.bits import inner_layer

MASKED_WEIGHTS = ("kernel", "linear_kernel")


def maskable_variables(layer):
    """The weight variables a probe masks (looks through wrappers at `.layer`)."""
    inner = inner_layer(layer)
    variables = [getattr(inner, name, None) for name in MASKED_WEIGHTS]
    variables = [v for v in variables if v is not None]
    if not variables:
        raise ValueError(f"Invalid candidate layer {layer.name!r}: it has no kernel to mask; "
                         "expected a conv / dense / quadratic layer.")
    return variables


def mask_for(shape, ratio, seed, name):
    """Boolean array of `shape`, True at exactly round(ratio * size) deterministic positions."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"Invalid masking_ratio={ratio!r}: expected a float in [0, 1].")
    size = int(np.prod(shape))
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    chosen = rng.permutation(size)[: int(round(ratio * size))]
    mask = np.zeros(size, dtype=bool)
    mask[chosen] = True
    return mask.reshape(shape)


@contextlib.contextmanager
def masked(layer, ratio=0.5, seed=0):
    """Context manager: zero a deterministic fraction `ratio` of the layer's kernel(s)."""
    variables = maskable_variables(layer)
    saved = [ops.convert_to_numpy(v) for v in variables]
    try:
        for i, (variable, value) in enumerate(zip(variables, saved)):
            mask = mask_for(value.shape, ratio, seed, f"{layer.name}/{i}")
            variable.assign(np.where(mask, np.zeros_like(value), value))
        yield layer
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)
