"""Helpers (no tests) for the quantizer tests: a probe layer holding one quantizer, NumPy references."""

import numpy as np
import keras

from quadkeras.quantizers.spec import clone


class Probe(keras.layers.Layer):
    """Applies one quantizer to its input; weight-role quantizers are built from `value`."""

    def __init__(self, spec, role="weight", value=None, **kwargs):
        super().__init__(**kwargs)
        self.q = clone(spec, name="q")
        self.q.role = self.q.role or role
        self.value = value

    def build(self, input_shape):
        if self.value is None:
            self.q.build(input_shape)
        else:
            self.q.build_from_value(self.value)

    def call(self, x, training=None):
        return self.q(x, training=training)


def probe(spec, x, role="weight", training=True):
    """(output, probe) of quantizer `spec` applied to x (weights: initialised from x)."""
    layer = Probe(spec, role=role, value=x if role == "weight" else None)
    layer.build(x.shape)
    out = keras.ops.convert_to_numpy(layer(x, training=training))
    return out, layer


def var(layer, suffix):
    """NumPy value of the probe's variable whose path ends in `suffix` (e.g. `q/step`)."""
    for v in layer.weights:
        if v.path.endswith(suffix):
            return np.asarray(keras.ops.convert_to_numpy(v), "float64")
    raise KeyError(suffix)


# --------------------------------------------------------------- references
def lsq(v, s, bits, signed):
    qn, qp = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    return np.round(np.clip(v / s, -qn, qp)) * s, qn, qp


def dorefa_weight(w, bits):
    t = np.tanh(w)
    t = t / (2 * np.abs(t).max()) + 0.5
    n = 2 ** bits - 1
    return 2 * np.round(t * n) / n - 1


def dorefa_act(x, bits):
    n = 2 ** bits - 1
    return np.round(np.clip(x, 0, 1) * n) / n


def pact(x, alpha, bits):
    n = 2 ** bits - 1
    y = np.clip(x, 0, alpha)
    return np.round(y * n / alpha) * alpha / n


def xnor_weight(w):
    return np.where(w >= 0, 1.0, -1.0) * np.abs(w).mean(axis=0)


def ternary_weight(w, axis=None):
    """TWN: per layer (axis=None, the default) or per output channel (axis=0)."""
    delta = 0.7 * np.abs(w).mean(axis=axis)
    mask = np.abs(w) > delta
    alpha = (np.abs(w) * mask).sum(axis=axis) / np.maximum(mask.sum(axis=axis), 1)
    return np.sign(w) * mask * alpha


def fake_quant(x, lo, hi, bits, narrow):
    """TF's FakeQuantWithMinMaxVars with zero-point nudging (per-tensor)."""
    qmin, qmax = (1 if narrow else 0), 2 ** bits - 1
    scale = (hi - lo) / (qmax - qmin)
    zero = np.clip(np.round(qmin - lo / scale), qmin, qmax)
    nlo, nhi = (qmin - zero) * scale, (qmax - zero) * scale
    return np.round((np.clip(x, nlo, nhi) - nlo) / scale) * scale + nlo


def nearest(x, levels):
    idx = np.abs(x[..., None] - levels).argmin(-1)
    return levels[idx], idx
