"""Quantizer state: mixed precision keeps every assignment made in `call` (torch included),
non-finite batches never become state, and `QuantizeWrapper` computes in its own dtype policy."""

import numpy as np
import pytest
import keras

from quadkeras.layers import QuadDense
from quadkeras.quantize import QuantizeWrapper, initialize_quantizers
from quadkeras.quantize.observe import set_parameters
from quadkeras.quantizers.base import INITIALIZED, PENDING
from tests import test_quantize_helpers as qu

pytestmark = pytest.mark.jax
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _values(layer):
    return {v.path: keras.ops.convert_to_numpy(v).astype("float64") for v in layer.weights}


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_fit_moves_state(policy):
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        inp = keras.Input((5,))
        x = QuantizeWrapper(QuadDense(4, name="q"), "lsq:4", "lsq:4", "fakequant:8")(inp)  # `ours`: branch BN
        out = QuantizeWrapper(keras.layers.Dense(3, name="fc"), "fakequant:8", "lqnet:2")(x)
        model = keras.Model(inp, out)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    model.compile("sgd", LOSS)
    xs = np.random.default_rng(0).random((8, 5)).astype("float32")
    if keras.backend.backend() == "jax":  # JAX's fit drops assignments to trainable variables
        initialize_quantizers(model, xs)
    basis0 = keras.ops.convert_to_numpy(model.get_layer("fc").input_quantizer.basis).copy()
    model.fit(xs, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    v = {k.split("/", 1)[1]: a for k, a in _values(model.get_layer("q")).items()}
    fc = {k.split("/", 1)[1]: a for k, a in _values(model.get_layer("fc")).items()}
    assert np.abs(v["q/branch_moving_mean"]).max() > 1e-4
    assert np.abs(v["q/branch_moving_variance"] - 1.0).max() > 1e-4
    assert v["input/initialized"] == 1.0 and abs(v["input/step"] - 1.0) > 1e-3
    assert v["output/initialized"] == 1.0 and v["output/max"] > 0.1 and v["output/min"] < 0.0
    assert fc["kernel/max"] > 0 and not np.allclose(fc["input/basis"], basis0)  # QEM step kept
    assert all(w.dtype == "float32" for w in model.weights)
    assert keras.backend.standardize_dtype(model.predict(xs, verbose=0).dtype) == policy.split("_")[1]


SPECS = ["lsq:4", "fakequant:8", "lqnet:2", "nonuniform:2", "lsq_mq:2:clip_init=max"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("role", ["activation", "weight"])
def test_nonfinite_batch_never_becomes_state(spec, role):
    rng = np.random.default_rng(1)
    good = np.abs(rng.standard_normal((16, 6))).astype("float32") + 0.1
    layer = qu.Probe(spec, role=role, value=good if role == "weight" else None)
    layer.build(good.shape)
    for bad_value in (np.nan, np.inf):
        bad = good.copy()
        bad[3, :] = bad_value  # every channel sees it (per-channel parameters too)
        if role == "activation" and layer.q.awaiting_data_init:  # first batch is bad: no init
            before = _values(layer)
            layer(bad, training=True)
            assert all(np.array_equal(before[k], a) for k, a in _values(layer).items()), spec
            assert layer.q.awaiting_data_init
            out = keras.ops.convert_to_numpy(layer(good, training=True))
            assert not layer.q.awaiting_data_init and np.isfinite(out).all()
        before = _values(layer)
        layer(bad, training=True)  # later bad batch: EMA / QEM / range update skipped
        after = _values(layer)
        for k, a in after.items():
            assert np.isfinite(a).all() and np.array_equal(before[k], a), (spec, role, k)


def test_wrapper_computes_in_its_own_dtype_policy():
    x = np.random.default_rng(2).random((2, 5)).astype("float32")
    w = QuantizeWrapper(keras.layers.Dense(3, dtype="float32"), "lsq:4", "fakequant:8", dtype="mixed_bfloat16")
    y = w(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert all(v.dtype == "float32" for v in w.weights)
    inner = QuadDense(3, dtype="mixed_float16")  # default policy: the wrapped layer's
    w = QuantizeWrapper(inner, "lsq:4", "lsq:4")
    assert w.dtype_policy.name == "mixed_float16"
    assert keras.backend.standardize_dtype(w(x).dtype) == "float16"
    back = QuantizeWrapper.from_config(w.get_config())
    assert back.dtype_policy.name == "mixed_float16"


def _lsq_model():
    inp = keras.Input((5,))
    out = QuantizeWrapper(keras.layers.Dense(3, name="fc"), "lsq:4", "lsq:4")(inp)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    return model


def _count_conds(monkeypatch):
    calls = []
    cond = keras.ops.cond

    def counting(*args, **kwargs):
        calls.append(1)
        return cond(*args, **kwargs)

    monkeypatch.setattr(keras.ops, "cond", counting)
    return calls


def test_initialized_quantizers_train_without_the_data_init_branch(monkeypatch):
    model = _lsq_model()
    xs = np.random.default_rng(0).random((8, 5)).astype("float32")
    ys = np.arange(8) % 3
    q = model.get_layer("fc").input_quantizer
    assert initialize_quantizers(model, xs) == 1
    step = float(keras.ops.convert_to_numpy(q.step))
    conds = _count_conds(monkeypatch)
    model.fit(xs, ys, batch_size=4, epochs=2, verbose=0)
    assert conds == []  # traced / run without the first-batch cond
    assert float(keras.ops.convert_to_numpy(q.step)) != step  # still trained by its gradient
    assert not q.awaiting_data_init


def test_loaded_initialized_model_skips_the_branch_and_a_fresh_one_keeps_it(tmp_path, monkeypatch):
    model = _lsq_model()
    xs = np.random.default_rng(0).random((8, 5)).astype("float32")
    initialize_quantizers(model, xs)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    fresh = _lsq_model()
    conds = _count_conds(monkeypatch)
    loaded(xs, training=True)
    assert conds == []
    fresh(xs, training=True)  # not initialised: the data-init branch is there
    assert len(conds) == 1
    if keras.backend.backend() != "jax":  # JAX: concrete call, but the variable is assigned too
        assert not fresh.get_layer("fc").input_quantizer.awaiting_data_init


def test_eager_fit_step_that_initialises_drops_the_branch(monkeypatch):
    if keras.backend.backend() == "jax":
        pytest.skip("JAX's fit keeps no assignment made in call: initialize_quantizers first")
    model = _lsq_model()
    model.compile(keras.optimizers.SGD(0.1), LOSS, run_eagerly=True)
    xs = np.random.default_rng(0).random((8, 5)).astype("float32")
    conds = _count_conds(monkeypatch)
    model.fit(xs, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)  # the first step initialises
    assert conds
    conds.clear()
    model.fit(xs, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    assert conds == []  # later steps skip the branch
    assert not model.get_layer("fc").input_quantizer.awaiting_data_init


def test_init_state_is_one_named_state_that_the_saved_variable_keeps(tmp_path):
    model = _lsq_model()
    q, k = model.get_layer("fc").input_quantizer, model.get_layer("fc").kernel_quantizer
    assert (q.init_state, k.init_state) == (PENDING, INITIALIZED)  # the kernel's: from its value
    assert [v.name for v in k.weights] == ["step"]  # nothing to save for it
    with q.stored_parameters_only():
        assert q.init_state == INITIALIZED
    assert q.init_state == PENDING  # read back from the `initialized` variable
    initialize_quantizers(model, np.random.default_rng(0).random((8, 5)).astype("float32"))
    assert q.init_state == INITIALIZED and float(keras.ops.convert_to_numpy(q.initialized_var)) == 1.0
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").get_layer("fc").input_quantizer.init_state == INITIALIZED


def test_set_parameters_leaves_a_non_finite_value_out_and_the_state_pending():
    layer = qu.Probe("fakequant:8", role="activation")
    layer.build((4, 3))
    set_parameters(layer.q, min=np.nan, max=2.0)
    assert qu.var(layer, "q/min") == 0.0 and qu.var(layer, "q/max") == 2.0
    assert layer.q.init_state == PENDING and layer.q.awaiting_data_init
    set_parameters(layer.q, min=-1.0, max=2.0)
    assert qu.var(layer, "q/min") == -1.0 and layer.q.init_state == INITIALIZED
