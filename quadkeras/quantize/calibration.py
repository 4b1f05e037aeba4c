"""Post-training calibration of activation fake-quant ranges: min/max, percentile or MSE.

PTQ through the QAT graph: wrap a float model with fake-quant (`quantize_model(model,
"int8_qat")`), run `calibrate` on a few hundred training images, export with
`litert_qat`. Each activation `FakeQuant` (layer inputs and outputs, the fused branch
output and the branch product of quadratic layers) sees the float activations of the
calibration images (quantization off while observing), a histogram per quantizer is built in
two passes (range, then 2048 bins), and its `[min, max]` is chosen by

- `minmax`: the observed range (what the LiteRT converter's own calibration uses);
- `percentile`: the `percentile`-th and `(100 - percentile)`-th percentiles;
- `mse` (default): the range `alpha * [min, max]` (alpha on a grid in (0, 1]) whose 2^bits
  levels give the least mean squared rounding + clipping error on the histogram.

Quadratic layers make the difference: the product of two branches is heavy-tailed, so its
min/max is set by a few extreme pixels and wastes most of the 256 levels.

Example:

>>> import numpy as np, keras
>>> from quadkeras.quantize import QuantizeWrapper
>>> inp = keras.Input((4,))
>>> wrapper = QuantizeWrapper(keras.layers.Dense(2), input_quantizer="fakequant:8")
>>> m = keras.Model(inp, wrapper(inp))
>>> x = np.random.default_rng(0).standard_normal((256, 4)).astype("float32")
>>> ranges = calibrate(m, x, method="minmax")
>>> [round(v, 3) for v in list(ranges.values())[0]] == [round(float(x.min()), 3), round(float(x.max()), 3)]
True
"""

import numpy as np

from quadkeras.quantize.model import quantized_layers
from quadkeras.quantize.observe import MinMax, finite_values, observe, set_parameters
from quadkeras.quantizers.fakequant import FakeQuant
from quadkeras.utils.validation import check_choice

CALIBRATION_METHODS = ("minmax", "percentile", "mse")
MSE_GRID = np.linspace(0.02, 1.0, 99)


class _HistogramObserver(MinMax):
    """Two passes over the data: the value range, then a histogram over it."""

    def __init__(self, bins):
        super().__init__()
        self.bins, self.counts, self.stage = bins, None, "range"

    def __call__(self, quantizer, x):
        if self.stage == "range":
            self.update(x)
            return
        values = finite_values(x)
        if not values.size:
            return
        counts, _ = np.histogram(np.clip(values, self.lo, self.hi), self.bins, (self.lo, self.hi))
        self.counts = counts if self.counts is None else self.counts + counts

    def centers(self):
        edges = np.linspace(self.lo, self.hi, self.bins + 1)
        return (edges[:-1] + edges[1:]) / 2


def _percentile_range(obs, percentile):
    cdf = np.cumsum(obs.counts) / max(obs.counts.sum(), 1)
    centers = obs.centers()
    lo = centers[min(np.searchsorted(cdf, 1 - percentile / 100), len(centers) - 1)]
    hi = centers[min(np.searchsorted(cdf, percentile / 100), len(centers) - 1)]
    return lo, hi


def _mse_range(obs, bits):
    """alpha * [lo, hi] minimising the histogram's expected squared quantization error."""
    centers, counts = obs.centers(), obs.counts.astype("float64")
    lo, hi = min(obs.lo, 0.0), max(obs.hi, 0.0)
    levels = 2 ** bits - 1
    best, best_err = (lo, hi), np.inf
    for alpha in MSE_GRID:
        a, b = alpha * lo, alpha * hi
        if b - a <= 0:
            continue
        step = (b - a) / levels
        q = np.clip(np.round((centers - a) / step), 0, levels) * step + a
        err = float(np.dot(counts, (centers - q) ** 2))
        if err < best_err:
            best, best_err = (a, b), err
    return best


def choose_range(obs, method, bits, percentile):
    """[min, max] (min <= 0 <= max) for one observed activation."""
    if obs.counts is None:
        return 0.0, 1e-6
    if method == "minmax":
        lo, hi = obs.lo, obs.hi
    elif method == "percentile":
        lo, hi = _percentile_range(obs, percentile)
    else:
        lo, hi = _mse_range(obs, bits)
    return float(min(lo, 0.0)), float(max(hi, 1e-6))


def activation_fake_quants(model):
    """(layer, quantizer) of every activation `FakeQuant` of `model`, in layer order."""
    return [(layer, q) for layer in quantized_layers(model) for q in layer.quantizers()
            if isinstance(q, FakeQuant) and q.role == "activation"]


def calibrate(model, images, method="mse", percentile=99.99, bins=2048, batch_size=100):
    """Set every activation fake-quant range of `model` from `images` (PTQ); returns
    `{"<layer>/<slot>": (min, max)}`. Weight ranges come from the kernels already."""
    check_choice("calibration method", method, CALIBRATION_METHODS)
    if not 50 < float(percentile) <= 100:
        raise ValueError(f"Invalid percentile={percentile!r}: expected a number in (50, 100].")
    images = np.asarray(images, "float32")
    found = activation_fake_quants(model)
    observers = [_HistogramObserver(int(bins)) for _ in found]
    for stage in ("range", "histogram"):
        for obs in observers:
            obs.stage = stage
        observe(model, images, [(q, obs) for (_, q), obs in zip(found, observers)], batch_size)
    ranges = {}
    for (layer, q), obs in zip(found, observers):
        lo, hi = choose_range(obs, method, q.bits, percentile)
        set_parameters(q, min=lo, max=hi)
        ranges[f"{layer.name}/{q.name}"] = (lo, hi)
    return ranges
