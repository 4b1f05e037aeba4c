"""Quantizer fidelity against the reference methods (their papers and model-quantization's
code): LSQ's runtime gradient scale, LQ-Net as in the LQ-Nets code, per-layer TWN, and
model-quantization's LSQ variant (`lsq_mq`)."""

import numpy as np
import pytest
import keras

from quadkeras import quantizers
from quadkeras.quantize import QuantizeWrapper, scheme_from_flags
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
    s = float(qu.var(layer, "q/step"))
    v = x / s
    ds = np.where(v >= 7, 7, -v + np.round(v))
    expected = (up * ds).sum() / np.sqrt(75 * 7)
    np.testing.assert_allclose(_grad(grads, "q/step"), expected, rtol=1e-4)
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
    assert np.isfinite(qu.var(layer, "q/basis")).all()


def test_lqnet_reference_init_granularity_and_gradients():
    w = _x(3, 3, 2, 4, scale=0.5)
    layer = qu.Probe("lqnet:3", value=w)
    layer.build(w.shape)
    ref = 2.0 ** np.arange(3) * 0.6745 * np.sqrt(2 / 18) / 4  # one basis per output channel
    np.testing.assert_allclose(qu.var(layer, "q/basis"), np.tile(ref, (4, 1)), rtol=1e-6)
    up = _x(*w.shape)
    _, dw, _ = layer_grads(layer, w, up)
    np.testing.assert_allclose(dw, up, atol=1e-6)  # straight through, also beyond the levels
    a = _x(6, 5, scale=3.0)
    act = qu.Probe("lqnet:3", role="activation")
    act.build((None, 5))
    ref = 2.0 ** np.arange(3) * 0.6745 * 2 / 7  # one basis per tensor
    np.testing.assert_allclose(qu.var(act, "q/basis"), ref, rtol=1e-6)
    up = _x(6, 5)
    _, da, _ = layer_grads(act, a, up)
    np.testing.assert_allclose(da, up * (a <= ref.sum()), atol=1e-6)  # clipped above the top only


def test_lqnet_qem_is_ridge_least_squares():
    w = _x(3, 3, 1, 2)
    q = quantizers.LQNet(bits=4, momentum=0.0)
    out, layer = qu.probe(q, w, training=False)
    basis = qu.var(layer, "q/basis")
    layer(w, training=True)
    new = qu.var(layer, "q/basis")
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


# ---------------------------------------------------------- model-quantization LSQ
def lsq_mq(x, c, bits, signed):
    """NumPy reference: (output, d out/dx, d out/dc) elementwise."""
    n = 2 ** bits - 1
    lo = -1.0 if signed else 0.0
    y = np.clip(x / c, lo, 1.0)
    level = 2 * np.round((y + 1) * n / 2) / n - 1 if signed else np.round(y * n) / n
    inside = (x / c > lo) & (x / c < 1.0)
    return level * c, inside.astype("float64"), level - inside * x / c


@pytest.mark.parametrize("bits,signed", [(2, True), (3, True), (2, False), (4, False)])
def test_lsq_mq_levels_and_ste_gradients(bits, signed):
    x = _x(12, 5, scale=1.2) + (0.0 if signed else 0.3)
    spec = f"lsq_mq:{bits}:{'signed' if signed else 'unsigned'}:boundary=0.8"
    layer = qu.Probe(spec, role="weight" if signed else "activation", value=x if signed else None)
    layer.build(x.shape)
    assert float(qu.var(layer, "q/clip")) == pytest.approx(0.8)
    up = _x(12, 5)
    out, dx, grads = layer_grads(layer, x, up)
    ref, inside, dc = lsq_mq(x.astype("float64"), 0.8, bits, signed)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert len(np.unique(out)) <= 2 ** bits and (not signed or 0.0 not in out)
    np.testing.assert_allclose(dx, up * inside, atol=1e-6)
    np.testing.assert_allclose(_grad(grads, "q/clip"), (up * dc).sum(), rtol=1e-4, atol=1e-5)


def test_lsq_mq_two_bit_levels_max_init_and_detached_var_mean():
    q = quantizers.get("lsq_mq:2")
    assert type(q) is quantizers.LSQModelQuantization and q.bits == 2
    out, _ = qu.probe(q, np.array([[-5.0, -0.5, 0.2, 0.9]], "float32"))
    np.testing.assert_allclose(out, [[-1.0, -1 / 3, 1 / 3, 1.0]], rtol=1e-6)
    x = np.abs(_x(8, 3)) * 4.0
    _, layer = qu.probe("lsq_mq:3:clip_init=max", x, role="activation")
    np.testing.assert_allclose(qu.var(layer, "q/clip"), np.abs(x).max(), rtol=1e-6)
    w = _x(6, 4) * 3.0 + 1.0  # var-mean per tensor (one quantization group), detached statistics
    layer = qu.Probe("lsq_mq:2:var_mean", value=w)
    layer.build(w.shape)
    up = _x(6, 4)
    out, dw, _ = layer_grads(layer, w, up)
    z = (w - w.mean()) / w.std()
    ref, inside, _ = lsq_mq(z.astype("float64"), 1.0, 2, True)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, up * inside / w.std(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="clip_init='mean'.*'boundary', 'max'"):
        quantizers.get("lsq_mq:2:clip_init=mean")


def test_lsq_mq_scheme_and_keras_round_trip(tmp_path):
    scheme = scheme_from_flags("lsq_mq", 2, 2)
    assert (scheme["kernel"], scheme["input"]) == ("lsq_mq:2", "lsq_mq:2")
    inp = keras.Input((5,))
    model = keras.Model(inp, QuantizeWrapper(keras.layers.Dense(3), "lsq_mq:2:var_mean", "lsq_mq:2")(inp))
    x = np.abs(_x(8, 5))
    model.compile("sgd", "mse")
    model.fit(x, _x(8, 3), epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "mq.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert loaded.layers[1].kernel_quantizer.get_config() == model.layers[1].kernel_quantizer.get_config()
