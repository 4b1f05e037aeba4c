"""Independent NumPy port of the BSQ reference re-quantization (yanghr/BSQ, written anew).

Follows the semantics of `BitConv2d.quant(maxbit=8)` and `ResNet.pruning(threshold=0)`
in the authors' code, in their layout: planes on the last axis, MSB FIRST, the normalised
value `v = sum_i (P_i - N_i) 2^(n-1-i) / (2^n - 1)`. Only used by tests/test_bsq.py.
"""

import numpy as np


def _split(r, nbits):
    """Binary planes of non-negative integers r, MSB first (repeated floor division)."""
    planes = []
    for i in range(nbits):
        ex = 2 ** (nbits - 1 - i)
        planes.append(np.floor(r / ex))
        r = r - np.floor(r / ex) * ex
    return np.stack(planes, axis=-1)


def quant(pos, neg, scale, nbits, maxbit=8):
    """Round the net value; on overflow add one bit (scale rescaled) below maxbit, else clip."""
    exps = 2.0 ** np.arange(nbits - 1, -1, -1) / (2 ** nbits - 1)
    value = np.sum((pos - neg) * exps, axis=-1)
    step = 2 ** nbits - 1
    rp = np.round(np.where(value > 0, value, 0.0) * step)
    rn = np.round(np.where(value <= 0, -value, 0.0) * step)
    if nbits >= maxbit:
        rp, rn = np.minimum(rp, step), np.minimum(rn, step)
    elif max(rp.max(), rn.max()) > step:
        nbits += 1
        scale = scale * (2 ** nbits - 1) / (2 ** (nbits - 1) - 1)
    return _split(rp, nbits), _split(rn, nbits), scale, nbits


def _nonzero(pos, neg):
    w = pos - neg
    return [np.count_nonzero(w[..., i]) for i in range(w.shape[-1])]


def prune(pos, neg, scale, nbits):
    """Drop all-zero MSB planes, then all-zero LSB planes (scale x2 each); keep >= 1 bit."""
    if nbits <= 1:
        return pos, neg, scale, nbits
    start = nbits
    for count in _nonzero(pos, neg)[:]:
        if count != 0:
            break
        pos, neg, nbits = pos[..., 1:], neg[..., 1:], nbits - 1
        if nbits == 1:
            break
    if nbits > 1:
        for count in _nonzero(pos, neg)[::-1]:
            if count != 0:
                break
            pos, neg, nbits, scale = pos[..., :-1], neg[..., :-1], nbits - 1, scale * 2
            if nbits == 1:
                break
    scale = scale * (2 ** nbits - 1) / (2 ** start - 1)
    return pos, neg, scale, nbits


def kernel(pos, neg, scale, nbits):
    """Represented kernel s * sum_i (P_i - N_i) 2^(n-1-i) / (2^n - 1)."""
    exps = 2.0 ** np.arange(nbits - 1, -1, -1) / (2 ** nbits - 1)
    return scale * np.sum((pos - neg) * exps, axis=-1)
