"""Quantizers against NumPy references: values, STE gradients, level counts, robustness, specs."""

import numpy as np
import pytest
import keras
from hypothesis import HealthCheck, given, settings, strategies as st

from quadkeras import quantizers
from quadkeras.quantizers.lqnet import encodings
from tests import test_quantize_helpers as qu
from tests.backend_utils import layer_grads

# Every quantizer check (values, STE gradients, level counts, hypothesis finiteness) runs on
# every backend, JAX included (about a minute there).
pytestmark = pytest.mark.jax

RNG = np.random.default_rng(0)


def _x(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype("float32")


# ------------------------------------------------------------------ forward values
@pytest.mark.parametrize("bits,signed", [(2, True), (4, True), (3, False), (8, False)])
def test_lsq_values_and_init(bits, signed):
    x = _x(16, 6) if signed else np.abs(_x(16, 6))
    spec = quantizers.LSQ(bits=bits, signed=signed)
    out, layer = qu.probe(spec, x)
    s = qu.var(layer, "q/step")
    _, _, qp = qu.lsq(x, 1.0, bits, signed)
    np.testing.assert_allclose(s, 2 * np.abs(x).mean() / np.sqrt(qp), rtol=1e-5)
    ref, _, _ = qu.lsq(x.astype("float64"), s, bits, signed)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_dorefa_values(bits):
    w = _x(12, 5)
    out, _ = qu.probe(f"dorefa:{bits}", w)
    ref = np.sign(w) * np.abs(w).mean() if bits == 1 else qu.dorefa_weight(w.astype("float64"), bits)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    a = _x(8, 5)
    out, _ = qu.probe(f"dorefa:{bits}", a, role="activation")
    np.testing.assert_allclose(out, qu.dorefa_act(a.astype("float64"), bits), atol=1e-6)


def test_pact_values():
    x = _x(8, 6, scale=4.0)
    out, _ = qu.probe("pact:3:alpha_init=2.5", x, role="activation")
    np.testing.assert_allclose(out, qu.pact(x.astype("float64"), 2.5, 3), atol=1e-6)


def test_xnor_and_ternary_values():
    w = _x(10, 4)
    out, _ = qu.probe("xnor", w)
    np.testing.assert_allclose(out, qu.xnor_weight(w.astype("float64")), rtol=1e-5)
    out, _ = qu.probe("ternary", w)
    np.testing.assert_allclose(out, qu.ternary_weight(w.astype("float64")), rtol=1e-5)
    a = _x(6, 4)
    out, _ = qu.probe("binary", a, role="activation")
    np.testing.assert_array_equal(out, np.where(a >= 0, 1.0, -1.0))


@pytest.mark.parametrize("role", ["weight", "activation"])
def test_fakequant_values(role):
    x = _x(32, 6, scale=2.0)
    out, layer = qu.probe("fakequant:4", x, role=role)
    lo, hi = qu.var(layer, "q/min"), qu.var(layer, "q/max")
    if role == "weight":
        np.testing.assert_allclose(hi, np.abs(x).max(), rtol=1e-6)
        np.testing.assert_allclose(lo, -hi)
    else:  # first batch initialises the EMA
        np.testing.assert_allclose([lo, hi], [x.min(), x.max()], rtol=1e-6)
    ref = qu.fake_quant(x.astype("float64"), float(lo), float(hi), 4, role == "weight")
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_fakequant_weight_per_channel_conv_and_per_tensor_dense():
    _, conv = qu.probe("fakequant:8", _x(3, 3, 2, 5))
    _, dense = qu.probe("fakequant:8", _x(7, 5))
    assert conv.q.granularity == "per_channel" and qu.var(conv, "q/max").shape == (5,)
    assert dense.q.granularity == "per_tensor" and qu.var(dense, "q/max").shape == ()


def test_lqnet_nearest_level_and_qem():
    w = _x(64, 3)
    q = quantizers.LQNet(bits=2, momentum=0.0, granularity="per_channel")
    out, layer = qu.probe(q, w, training=False)
    basis = qu.var(layer, "q/basis")  # (3, 2)
    codes = encodings(2, True)
    for c in range(3):
        ref, _ = qu.nearest(w[:, c].astype("float64"), codes @ basis[c])
        np.testing.assert_allclose(out[:, c], ref, rtol=1e-5)
    layer(w, training=True)  # one QEM step with momentum 0: least squares on the encodings
    new = qu.var(layer, "q/basis")
    for c in range(3):
        _, idx = qu.nearest(w[:, c].astype("float64"), codes @ basis[c])
        b = codes[idx]
        solved = np.linalg.lstsq(b, w[:, c].astype("float64"), rcond=None)[0]
        np.testing.assert_allclose(new[c], solved, rtol=1e-3, atol=1e-4)


def test_nonuniform_values():
    w = _x(20, 2)
    out, layer = qu.probe("nonuniform:2", w)
    levels = qu.var(layer, "q/levels")
    np.testing.assert_allclose(levels, np.linspace(-1, 1, 4) * 2 * np.abs(w).mean() * np.sqrt(3), rtol=1e-5)
    np.testing.assert_allclose(out, qu.nearest(w.astype("float64"), levels)[0], rtol=1e-5)


def test_groups_and_var_mean():
    w = _x(9, 4) * np.array([1, 1, 10, 10], "float32") + 3.0
    out, layer = qu.probe("lsq:3:g2:var_mean", w)
    z = (w - w.mean(0)) / w.std(0)
    s = qu.var(layer, "q/step")
    assert s.shape == (2,)
    s_ch = np.repeat(s, 2)
    np.testing.assert_allclose(s, [2 * np.abs(z[:, :2]).mean() / np.sqrt(3), 2 * np.abs(z[:, 2:]).mean() / np.sqrt(3)], rtol=1e-4)
    np.testing.assert_allclose(out, qu.lsq(z, s_ch, 3, True)[0], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------- STE gradients
@pytest.mark.parametrize("role", ["weight", "activation"])
def test_lsq_gradients(role):
    x = _x(8, 5, scale=1.5)
    signed = role == "weight"
    layer = qu.Probe("lsq:3", role=role, value=x if role == "weight" else None)
    layer.build(x.shape)
    layer(x, training=True)  # initialise the activation step on a first batch
    up = _x(8, 5)
    out, dx, grads = layer_grads(layer, x, up)
    s = float(qu.var(layer, "q/step"))
    ref, qn, qp = qu.lsq(x.astype("float64"), s, 3, signed)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    v = x / s
    inside = (v > -qn) & (v < qp)
    np.testing.assert_allclose(dx, up * inside, atol=1e-6)
    n = x.size if role == "weight" else x.shape[1]
    g = 1 / np.sqrt(n * qp)
    ds = np.where(v <= -qn, -qn, np.where(v >= qp, qp, -v + np.round(v)))
    (gs,) = [val for k, val in grads.items() if k.endswith("q/step")]
    np.testing.assert_allclose(gs, g * (up * ds).sum(), rtol=1e-4, atol=1e-6)


def test_lsq_per_channel_weight_gradients():
    """Per-channel steps (torch: the native op's per-channel reduction) against NumPy, with
    values on the clip levels and beyond them."""
    x = _x(12, 4, scale=2.0)
    layer = qu.Probe("lsq:3:per_channel", role="weight", value=x)
    layer.build(x.shape)
    s = qu.var(layer, "q/step").astype("float64")
    x[0] = -4 * s  # exactly the lower clip level (Q_N = 4)
    x[1] = 3 * s  # exactly the upper one (Q_P = 3)
    x[2] = 9 * s  # far beyond
    up = _x(12, 4)
    out, dx, grads = layer_grads(layer, x, up)
    v = (x / s.astype("float32")).astype("float64")  # float32 division, as the op does it
    np.testing.assert_allclose(out, s * np.round(np.clip(v, -4, 3)), rtol=1e-5, atol=1e-6)
    inside = (v >= -4) & (v <= 3)
    np.testing.assert_allclose(dx, up * inside, atol=1e-6)
    ds = np.where(inside, np.round(np.clip(v, -4, 3)) - v, np.clip(v, -4, 3))
    (gs,) = [val for k, val in grads.items() if k.endswith("q/step")]
    g = 1 / np.sqrt(x.shape[0] * 3)
    np.testing.assert_allclose(gs, g * (up * ds).sum(axis=0), rtol=1e-4, atol=1e-5)


def test_lsq_activation_gradient_passes_at_the_clip_levels():
    """LSQ's straight-through range is inclusive: ReLU zeros (v == 0 == low) and values
    exactly on the top level pass their gradient; one float32 ulp above the top does not."""
    layer = qu.Probe("lsq:2", role="activation")
    layer.build((4, 6))
    layer(np.abs(_x(4, 6)), training=True)  # initialise the step on a first batch
    (step,) = [w for w in layer.weights if w.path.endswith("q/step")]
    step.assign(np.full(step.shape, 0.25, "float32"))  # a power of two: x / s is exact anywhere
    x = np.zeros((4, 6), "float32")  # row 0: ReLU zeros, v == 0 == low
    x[1] = 0.75  # v == 3 == Q_P exactly (unsigned, 2 bits)
    x[2] = np.nextafter(np.float32(0.75), np.float32(1))  # one ulp above the top level
    x[3] = -1e-6  # just below zero (not a denormal: CPU kernels may flush those to zero)
    up = _x(4, 6)
    _, dx, _ = layer_grads(layer, x, up)
    inside = np.array([True, True, False, False])[:, None]
    np.testing.assert_array_equal(dx, up * inside)


@pytest.mark.parametrize("at", ["below", "floor", "above"])
def test_lsq_step_gradient_at_the_positive_floor(at):
    """LSQ computes with max(step, 1e-8): a step below the floor gets no gradient, and one
    exactly at it (an all-zero first batch initialises it there) still moves."""
    from quadkeras.quantizers.base import POSITIVE_FLOOR

    layer = qu.Probe("lsq:2", role="activation")
    layer.build((4, 6))
    layer(np.abs(_x(4, 6)), training=True)
    (step,) = [w for w in layer.weights if w.path.endswith("q/step")]
    value = {"below": POSITIVE_FLOOR / 4, "floor": POSITIVE_FLOOR, "above": 4 * POSITIVE_FLOOR}[at]
    step.assign(np.full(step.shape, value, "float32"))
    x = np.abs(_x(4, 6)) * 1e-8  # around the top level for such steps: a nonzero gradient
    _, _, grads = layer_grads(layer, x, _x(4, 6))
    (gs,) = [val for k, val in grads.items() if k.endswith("q/step")]
    if at == "below":
        assert np.all(gs == 0.0), gs
    else:
        assert np.all(np.abs(gs) > 0.0), gs


def test_pact_gradients():
    x = _x(6, 4, scale=3.0)
    layer = qu.Probe("pact:2:alpha_init=2.0", role="activation")
    layer.build(x.shape)
    up = _x(6, 4)
    _, dx, grads = layer_grads(layer, x, up)
    (ga,) = [val for k, val in grads.items() if k.endswith("q/alpha")]
    np.testing.assert_allclose(ga, (up * (x >= 2.0)).sum(), rtol=1e-5)
    np.testing.assert_allclose(dx, up * ((x > 0) & (x < 2.0)), atol=1e-6)


@pytest.mark.parametrize("spec,role,lo,hi", [("dorefa:2", "activation", 0.0, 1.0),
                                             ("xnor", "activation", -1.0, 1.0)])
def test_clipped_ste_gradients(spec, role, lo, hi):
    x = _x(6, 4, scale=1.5)
    layer = qu.Probe(spec, role=role)
    layer.build(x.shape)
    up = _x(6, 4)
    _, dx, _ = layer_grads(layer, x, up)
    np.testing.assert_allclose(dx, up * ((x >= lo) & (x <= hi)), atol=1e-6)


def test_nonuniform_level_gradients():
    w = _x(30, 1)
    layer = qu.Probe("nonuniform:2", value=w)
    layer.build(w.shape)
    up = _x(30, 1)
    _, dx, grads = layer_grads(layer, w, up)
    levels = qu.var(layer, "q/levels")
    _, idx = qu.nearest(w.astype("float64"), levels)
    (gl,) = [val for k, val in grads.items() if k.endswith("q/levels")]
    np.testing.assert_allclose(gl, [up[idx == i].sum() for i in range(4)], rtol=1e-5, atol=1e-6)
    inside = (w >= levels.min()) & (w <= levels.max())
    np.testing.assert_allclose(dx, up * inside, atol=1e-6)


# ---------------------------------------------------------------- level counts
LEVEL_CASES = [("lsq", b) for b in (2, 3, 4, 8)] + [("dorefa", b) for b in (1, 2, 4)] + \
    [("lqnet", b) for b in (1, 2, 3)] + [("nonuniform", b) for b in (1, 2, 3)] + \
    [("fakequant", b) for b in (2, 4)] + [("xnor", 1), ("ternary", 2)] + [("lsq_mq", b) for b in (2, 4)]


@pytest.mark.parametrize("name,bits", LEVEL_CASES)
def test_at_most_2_to_b_levels(name, bits):
    x = _x(64, 8, scale=2.0)
    for role in ("weight", "activation"):
        spec = f"{name}:{bits}:per_tensor"
        out, _ = qu.probe(spec, x, role=role)
        assert len(np.unique(out)) <= 2 ** bits, (spec, role)
    out, _ = qu.probe(f"pact:{min(bits, 8)}", x, role="activation")
    assert len(np.unique(out)) <= 2 ** min(bits, 8)


# ----------------------------------------------------------------- robustness
SPECS = ["lsq:2", "lsq:4:per_channel", "dorefa:1", "dorefa:3", "pact:2", "lqnet:2", "xnor",
         "ternary", "nonuniform:2", "fakequant:8", "lsq:4:var_mean", "lqnet:2:g2", "lqnet:4",
         "lsq_mq:2", "lsq_mq:3:var_mean:clip_init=max"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.sampled_from(SPECS), role=st.sampled_from(["weight", "activation"]),
       kind=st.sampled_from(["zeros", "constant", "huge"]), c=st.floats(-1e6, 1e6, allow_nan=False))
def test_finite_on_degenerate_inputs(spec, role, kind, c):
    if spec.startswith("pact"):
        role = "activation"
    if kind == "zeros":
        x = np.zeros((4, 4), "float32")
    elif kind == "constant":
        x = np.full((4, 4), c, "float32")
    else:
        x = np.where(np.arange(16).reshape(4, 4) % 2 == 0, 1e6, -1e6).astype("float32")
    layer = qu.Probe(spec, role=role, value=x if role == "weight" else None)
    layer.build(x.shape)
    up = np.ones_like(x)
    out, dx, grads = layer_grads(layer, x, up)
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    assert all(np.isfinite(g).all() for g in grads.values())


# --------------------------------------------------------- specs and serialization
def test_spec_grammar():
    q = quantizers.get("lsq:4:per_channel:unsigned:var_mean")
    assert (type(q), q.bits, q.granularity, q.signed, q.normalize) == (quantizers.LSQ, 4, "per_channel", False, "var_mean")
    q = quantizers.get("pact:3:g4:alpha_init=6")
    assert (q.granularity, q.groups, q.alpha_init) == ("groups", 4, 6.0)
    assert isinstance(quantizers.get("twn"), quantizers.Ternary)
    assert quantizers.get({"name": "dorefa", "bits": 2}).bits == 2
    assert quantizers.get({"class_name": "LQNet", "config": {"bits": 3}}).bits == 3


@pytest.mark.parametrize("spec,match", [
    ("nope:4", "quantizer='nope'.*'lsq'"),
    ("lsq:9", r"bits=9 for quantizer 'lsq'.*expected an integer in \[2, 8\]"),
    ("xnor:2", "bits=2 for quantizer 'xnor'.*expected 1"),
    ("lsq:4:sideways", "option 'sideways'"),
    ("lsq:4:colour=3", "argument .*'colour'"),
    ("pact:2:alpha_init=__import__('os')", "Invalid value"),
    ("lsq:4:granularity=rows", "granularity='rows'"),
    ({"name": "lsq", "bitz": 4}, "argument of quantizer 'lsq'='bitz'.*'bits'"),
    ({"class_name": "PACT", "config": {"bits": 4, "alpha": 3}}, "argument of quantizer 'pact'='alpha'"),
])
def test_spec_errors_are_one_line(spec, match):
    with pytest.raises(ValueError, match=match) as info:
        quantizers.get(spec)
    assert "\n" not in str(info.value)



# Bad numeric options: each refused in one line naming the option and its allowed range (the
# checks live once, in `Quantizer.check_number` / `check_bits`, not in each method).
@pytest.mark.parametrize("spec,match", [
    ("pact:4:alpha_init=nan", r"alpha_init='nan' for quantizer 'pact'.*finite number > 0"),
    ("pact:4:alpha_init=-1", r"alpha_init=-1 for quantizer 'pact'.*finite number > 0"),
    ("pact:4:alpha_init=0", r"alpha_init=0 for quantizer 'pact'.*finite number > 0"),
    ("pact:4:alpha_init=1e999", r"alpha_init=inf for quantizer 'pact'.*finite number > 0"),
    ("pact:4:alpha_init=true", r"alpha_init=True for quantizer 'pact'.*finite number > 0"),
    ("lsq_mq:2:boundary=inf", r"boundary='inf' for quantizer 'lsq_mq'.*finite number > 0"),
    ("fakequant:8:ema_decay=1.5", r"ema_decay=1.5 for quantizer 'fakequant'.*in \[0, 1\]"),
    ("fakequant:8:narrow_range=2", r"narrow_range=2.*None, True, False"),
    ("lqnet:2:momentum=-0.1", r"momentum=-0.1 for quantizer 'lqnet'.*in \[0, 1\]"),
    ("lqnet:2:ridge=-1", r"ridge=-1 for quantizer 'lqnet'.*finite number >= 0"),
    ("ternary:threshold=nan", r"threshold='nan' for quantizer 'ternary'.*finite number >= 0"),
    ("lsq:-1", r"bits=-1 for quantizer 'lsq'.*expected an integer in \[2, 8\]"),
    ("lsq:0", r"bits=0 for quantizer 'lsq'.*expected an integer in \[2, 8\]"),
    ("pact:bits=99", r"bits=99 for quantizer 'pact'.*expected an integer in \[1, 8\]"),
    ("lqnet:8", r"bits=8 for quantizer 'lqnet'.*expected an integer in \[1, 4\]"),
    ({"name": "lsq", "bits": True}, r"bits=True for quantizer 'lsq'"),
    ({"name": "lsq", "bits": 4.5}, r"bits=4.5 for quantizer 'lsq'"),
    ("lsq:4:groups=0", r"groups=0.*positive integer"),
])
def test_bad_numeric_options_are_refused_naming_the_range(spec, match):
    with pytest.raises(ValueError, match=match) as info:
        quantizers.get(spec)
    assert "\n" not in str(info.value)


def test_numeric_options_are_checked_in_the_constructor_too():
    with pytest.raises(ValueError, match="alpha_init=nan for quantizer 'pact'"):
        quantizers.PACT(alpha_init=float("nan"))
    q = quantizers.get("pact:4:alpha_init=6")  # valid values pass unchanged (ints become floats)
    assert q.alpha_init == 6.0 and isinstance(q.alpha_init, float)
    assert quantizers.get({"name": "lsq", "bits": np.int64(4)}).bits == 4


@pytest.mark.parametrize("spec,first,second", [
    ("lsq:4:per_channel:per_tensor", "per_channel", "per_tensor"),
    ("lsq:4:bits=8", "4", "bits=8"),
    ("lsq:4:signed:unsigned", "signed", "unsigned"),
    ("lsq:4:per_channel:g4", "per_channel", "g4"),
    ("pact:4:alpha_init=2:alpha_init=3", "alpha_init=2", "alpha_init=3"),
    ("lsq:4:weight:role=activation", "weight", "role=activation"),
])
def test_contradictory_spec_options_are_refused_naming_both(spec, first, second):
    with pytest.raises(ValueError) as info:
        quantizers.get(spec)
    text = str(info.value)
    assert f"'{first}'" in text and f"'{second}'" in text and "contradict" in text, text
    assert "\n" not in text


def test_repeated_identical_spec_options_are_accepted():
    q = quantizers.get("lsq:4:per_channel:per_channel:bits=4")
    assert (q.bits, q.granularity) == (4, "per_channel")
    assert quantizers.get("lsq:4:g2:groups=2").groups == 2

def test_serialization_round_trip():
    for spec in SPECS:
        q = quantizers.get(spec)
        back = quantizers.deserialize(quantizers.serialize(q))
        assert type(back) is type(q) and back.get_config() == q.get_config()
        assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(q)).get_config() == q.get_config()
