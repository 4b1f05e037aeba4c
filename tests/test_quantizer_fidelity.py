"""Quantizer fidelity against the reference methods (SPEC §4): LSQ's runtime gradient scale,
LQ-Net as in the LQ-Nets code, per-layer TWN."""

import numpy as np
import pytest
import keras

from quadkeras import quantizers
from quadkeras.quantizers.lqnet import encodings
from tests import test_quantize_helpers as qu
from tests.backend_utils import layer_grads

pytestmark = pytest.mark.jax
RNG = np.random.default_rng(5)


def _x(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype("float32")


def _grad(grads, suffix):
    (g,) = [v for k, v in grads.items() if k.endswith(suffix)]
    return g


# ------------------------------------------------------------------------- LSQ
def test_lsq_gradient_scale_uses_runtime_shape_for_unknown_dims():
    x = np.abs(_x(2, 5, 5, 3))
    layer = qu.Probe("lsq:3", role="activation")
    layer.build((None, None, None, 3))  # Input((None, None, C)): N must be 5*5*3, not C
    layer(x, training=True)
    up = _x(2, 5, 5, 3)
    _, _, grads = layer_grads(layer, x, up)
    s = float(qu.var(layer, "q_step"))
    v = x / s
    ds = np.where(v >= 7, 7, -v + np.round(v))
    expected = (up * ds).sum() / np.sqrt(75 * 7)
    np.testing.assert_allclose(_grad(grads, "q_step"), expected, rtol=1e-4)
    if keras.backend.backend() == "tensorflow":  # graph mode: the dims are symbolic
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
        def step_grad(t):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(t, training=False) * up)
            return tape.gradient(loss, layer.q.step.value)

        np.testing.assert_allclose(step_grad(tf.constant(x)).numpy(), expected, rtol=1e-4)


# ----------------------------------------------------------------------- LQ-Net
@pytest.mark.parametrize("role", ["weight", "activation"])
def test_lqnet_4_bits_stays_solvable_with_unused_levels(role):
    x = _x(3, 3, 2, 4) if role == "weight" else np.maximum(_x(4, 6), 0.0)
    layer = qu.Probe("lqnet:4", role=role, value=x if role == "weight" else None)
    layer.build(x.shape)
    for _ in range(3):  # 18 (or 24) values for 16 levels: most codes unused
        out = keras.ops.convert_to_numpy(layer(x, training=True))
        assert np.isfinite(out).all()
    assert np.isfinite(qu.var(layer, "q_basis")).all()


def test_lqnet_reference_init_granularity_and_gradients():
    w = _x(3, 3, 2, 4, scale=0.5)
    layer = qu.Probe("lqnet:3", value=w)
    layer.build(w.shape)
    ref = 2.0 ** np.arange(3) * 0.6745 * np.sqrt(2 / 18) / 4  # one basis per output channel
    np.testing.assert_allclose(qu.var(layer, "q_basis"), np.tile(ref, (4, 1)), rtol=1e-6)
    up = _x(*w.shape)
    _, dw, _ = layer_grads(layer, w, up)
    np.testing.assert_allclose(dw, up, atol=1e-6)  # straight through, also beyond the levels
    a = _x(6, 5, scale=3.0)
    act = qu.Probe("lqnet:3", role="activation")
    act.build((None, 5))
    ref = 2.0 ** np.arange(3) * 0.6745 * 2 / 7  # one basis per tensor
    np.testing.assert_allclose(qu.var(act, "q_basis"), ref, rtol=1e-6)
    up = _x(6, 5)
    _, da, _ = layer_grads(act, a, up)
    np.testing.assert_allclose(da, up * (a <= ref.sum()), atol=1e-6)  # clipped above the top only


def test_lqnet_qem_is_ridge_least_squares():
    w = _x(3, 3, 1, 2)
    q = quantizers.LQNet(bits=4, momentum=0.0)
    out, layer = qu.probe(q, w, training=False)
    basis = qu.var(layer, "q_basis")
    layer(w, training=True)
    new = qu.var(layer, "q_basis")
    codes = encodings(4, True)
    for c in range(2):
        col = w[..., c].reshape(-1).astype("float64")
        _, idx = qu.nearest(col, codes @ basis[c])
        b = codes[idx]
        solved = np.linalg.solve(b.T @ b / len(col) + 1e-4 * np.eye(4), b.T @ col / len(col))
        np.testing.assert_allclose(new[c], solved, rtol=2e-3, atol=1e-4)


# ------------------------------------------------------------------------- TWN
def test_ternary_defaults_to_per_layer():
    w = _x(10, 4) * np.array([0.1, 1.0, 3.0, 10.0], "float32")
    out, layer = qu.probe("ternary", w)
    assert layer.q.granularity == "per_tensor"
    np.testing.assert_allclose(out, qu.ternary_weight(w.astype("float64"), axis=None), rtol=1e-5)
    out, _ = qu.probe("ternary:per_channel", w)
    np.testing.assert_allclose(out, qu.ternary_weight(w.astype("float64"), axis=0), rtol=1e-5)
