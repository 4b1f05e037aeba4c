"""Pure-NumPy bit-plane algebra of BSQ (Yang et al., ICLR 2021).

An n-bit layer kernel is `W = s * c / (2^n - 1)` with signed integer codes
`c in [-(2^n - 1), 2^n - 1]`. BSQ stores the codes as positive and negative bit planes,
`c = sum_b 2^b * (P_b - N_b)`, with `P_b, N_b in {0, 1}` after re-quantization (continuous
in [0, 2] while training). Planes live on the LAST axis, index `b` = bit `b` (LSB first);
only planes `b < precision` are active, the rest are zero.

Example:

>>> import numpy as np
>>> codes, scale = quantize_codes(np.array([0.5, -1.0, 0.25]), bits=2)
>>> codes.tolist(), scale
([2, -3, 1], 1.0)
>>> pos, neg = codes_to_planes(codes, num_planes=2)
>>> planes_to_codes(pos, neg, precision=2).tolist()
[2, -3, 1]
>>> adjust_precision(np.array([4, -8, 0]), scale=1.0, precision=8)
(array([ 1, -2,  0]), 0.047058823529411764, 2)
>>> c, s, n = requantize_planes(np.array([[1.0, 1.5]]), np.zeros((1, 2)), 3.0, precision=2)
>>> c.tolist(), s, n  # 1 + 2 * 1.5 = 4 overflows 2 bits: one more bit, same value 3 * 4 / 3
([4], 7.0, 3)
"""

import numpy as np

from quadkeras.utils.validation import check_int_range

MAX_BITS = 16
GROW_LIMIT = 8  # BSQ's `quant(maxbit=8)`: precision may grow up to this many bits


def levels(bits):
    """Largest code of an unsigned `bits`-bit magnitude, 2^bits - 1."""
    return float(2 ** int(bits) - 1)


def quantize_codes(kernel, bits, scale=None):
    """Signed integer codes of `kernel` at `bits` bits and the scale (default max|W|)."""
    check_int_range("bits", int(bits), 1, MAX_BITS)
    kernel = np.asarray(kernel, dtype="float64")
    scale = float(np.max(np.abs(kernel))) if scale is None else float(scale)
    if scale == 0.0:
        return np.zeros(kernel.shape, dtype="int64"), 0.0
    top = levels(bits)
    mags = np.minimum(np.rint(np.abs(kernel) / scale * top), top)
    return (np.sign(kernel) * mags).astype("int64"), scale


def dequantize(codes, scale, precision):
    """Float kernel `s * c / (2^n - 1)` of integer codes."""
    return (float(scale) * np.asarray(codes, dtype="float64") / levels(precision)).astype("float32")


def codes_to_planes(codes, num_planes):
    """Positive and negative {0,1} planes (shape codes.shape + (num_planes,)) of codes."""
    codes = np.asarray(codes, dtype="int64")
    if np.any(np.abs(codes) >= 2 ** num_planes):
        raise ValueError(f"Invalid codes: magnitudes need more than num_planes={num_planes} bits.")
    bit = 2 ** np.arange(num_planes, dtype="int64")
    pos = (np.maximum(codes, 0)[..., None] // bit) % 2
    neg = (np.maximum(-codes, 0)[..., None] // bit) % 2
    return pos.astype("float32"), neg.astype("float32")


def rounded_codes(pos, neg, precision):
    """Nearest signed integers of the active planes' weighted sum (not clipped).

    Summing with the bit weights carries any plane value >= 1 into the higher bits;
    positive and negative parts are netted before rounding (half to even, as torch.round).
    With planes in [0, 2] the magnitudes stay <= 2 * (2^n - 1), i.e. fit n + 1 bits.
    """
    pos = np.asarray(pos, dtype="float64")
    neg = np.asarray(neg, dtype="float64")
    weights = np.where(np.arange(pos.shape[-1]) < precision, 2.0 ** np.arange(pos.shape[-1]), 0.0)
    return np.rint(np.sum((pos - neg) * weights, axis=-1)).astype("int64")


def planes_to_codes(pos, neg, precision):
    """Re-quantize continuous planes to exact signed codes clipped to `precision` bits."""
    top = int(levels(precision))
    return np.clip(rounded_codes(pos, neg, precision), -top, top)


def requantize_planes(pos, neg, scale, precision, grow_limit=GROW_LIMIT, increase=True):
    """BSQ's `quant()`: exact codes of continuous planes, growing the precision on overflow.

    If a rounded magnitude exceeds 2^n - 1 and n < `grow_limit` (and `increase`), the
    precision becomes n + 1 and the scale is multiplied by (2^(n+1) - 1) / (2^n - 1), so the
    represented kernel `s * c / (2^n - 1)` keeps the unclipped values; otherwise the codes
    are clipped to n bits. At most one bit is gained per call, as in the reference.
    Returns (codes, scale, precision).
    """
    n = int(precision)
    codes = rounded_codes(pos, neg, n)
    if increase and n < int(grow_limit) and np.any(np.abs(codes) > levels(n)):
        scale = float(scale) * levels(n + 1) / levels(n)
        n += 1
    top = int(levels(n))
    return np.clip(codes, -top, top), float(scale), n


def adjust_precision(codes, scale, precision):
    """Drop all-zero MSB planes and all-zero LSB planes (BSQ's precision adjustment).

    Each dropped MSB lowers the precision by one; each dropped LSB lowers it by one and
    halves the codes (the scale doubles). The scale is finally rescaled by
    (2^n - 1) / (2^n0 - 1) so that the represented kernel is unchanged. At least one bit
    is kept. Returns (codes, scale, precision).
    """
    codes = np.asarray(codes, dtype="int64")
    start = int(precision)
    mags = np.abs(codes)
    n = start
    while n > 1 and np.all(mags < 2 ** (n - 1)):
        n -= 1
    shift = 0
    while n > 1 and np.all(mags % 2 ** (shift + 1) == 0):
        shift += 1
        n -= 1
    codes = np.sign(codes) * (mags >> shift)
    scale = float(scale) * 2.0 ** shift * levels(n) / levels(start)
    return codes, scale, n


def ones_percent(codes, precision):
    """Percentage of non-zero bits per bit position, MSB first (BSQ's `print_stat`)."""
    mags = np.abs(np.asarray(codes, dtype="int64"))
    total = max(mags.size, 1)
    return [float(100.0 * np.count_nonzero((mags >> b) & 1) / total) for b in range(int(precision) - 1, -1, -1)]
