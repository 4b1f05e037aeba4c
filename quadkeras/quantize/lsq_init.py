"""MSE initialisation of LSQ step sizes from a trained model and a few calibration images.

LSQ's own init (s = 2·mean|v|/√Q_P, from the kernel and the first training batch) is meant
for a long training run. For a short low-bit fine-tune of a trained network, starting from
the step that minimises the quantization error gives a much better start:

- kernels: per step (per tensor, or per output channel), s = argmin_s mean (w − q_s(w))²
  over s = alpha·max|w|/Q_P, alpha on a grid in (0, 1];
- activations (layer inputs, quadratic branch outputs and products): the same on values
  sampled from the float activations of `images` (quantization off while observing;
  non-finite values, e.g. an image on which a quadratic float network overflows, are dropped).

Example:

>>> import numpy as np, keras
>>> from quadkeras.quantize import QuantizeWrapper
>>> inp = keras.Input((8,))
>>> w = QuantizeWrapper(keras.layers.Dense(4), kernel_quantizer="lsq:4", input_quantizer="lsq:4")
>>> m = keras.Model(inp, w(inp))
>>> x = np.abs(np.random.default_rng(0).standard_normal((64, 8))).astype("float32")
>>> steps = mse_init_lsq(m, x)
>>> sorted(steps)
['dense/input', 'dense/kernel']
"""

import numpy as np
from keras import ops

from quadkeras.quantize.model import quantized_layers
from quadkeras.quantize.observe import observe, set_parameters
from quadkeras.quantizers.lsq import LSQ

ALPHAS = np.linspace(0.01, 1.0, 100)
SAMPLES = 200_000


def mse_step(values, qn, qp):
    """The step s (per column of the 2-D `values`, rows = samples) minimising the mean squared
    error of s·clip(round(v/s), −qn, qp); values may be signed or not."""
    values = np.asarray(values, "float64")
    top = np.maximum(np.abs(values).max(axis=0), 1e-12)
    best, best_err = top / qp, np.full(values.shape[1], np.inf)
    for alpha in ALPHAS:
        s = alpha * top / qp
        err = ((values - np.clip(np.round(values / s), -qn, qp) * s) ** 2).mean(axis=0)
        better = err < best_err
        best, best_err = np.where(better, s, best), np.where(better, err, best_err)
    return best


def _lsq_quantizers(model):
    return [(layer, q) for layer in quantized_layers(model) for q in layer.quantizers()
            if type(q) is LSQ and q.granularity in ("per_tensor", "per_channel")]


def _as_columns(q, values):
    """(samples, columns) view of `values` for the step's granularity."""
    values = np.asarray(values, "float64")
    return values.reshape(-1, values.shape[-1]) if q.granularity == "per_channel" else values.reshape(-1, 1)


def mse_init_lsq(model, images, batch_size=100, seed=0, activations=True):
    """Set every (per-tensor / per-channel) `LSQ` step of `model` to its MSE-optimal value on
    the kernel, or on the inference-mode float activations of `images`; returns
    {"<layer>/<slot>": mean step}. `activations=False`: kernels only (for a model whose
    inference-mode activations are not representative, e.g. BN statistics that overflow)."""
    rng = np.random.default_rng(seed)
    found = [(layer, q) for layer, q in _lsq_quantizers(model) if activations or q.role == "weight"]
    samples = {id(q): [] for _, q in found}

    def observe_sample(q, x):
        cols = _as_columns(q, ops.convert_to_numpy(x))
        cols = cols[np.isfinite(cols).all(axis=1)]  # an overflowing image must not poison the step
        keep = rng.choice(len(cols), min(len(cols), SAMPLES // 4), replace=False)
        samples[id(q)].append(cols[keep])

    observe(model, images, [(q, observe_sample) for _, q in found if q.role != "weight"], batch_size)
    steps = {}
    for layer, q in found:
        if q.role == "weight":
            values = _as_columns(q, ops.convert_to_numpy(layer._kernel_view(layer.layer.kernel)))
        elif samples[id(q)]:
            values = np.concatenate(samples[id(q)])
        else:
            continue
        qn, qp = q.q_range()
        step = mse_step(values, qn, qp).astype("float32")
        set_parameters(q, step=step)
        steps[f"{layer.name}/{q.name}"] = float(step.mean())
    return steps
