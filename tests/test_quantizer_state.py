"""Quantizer state: mixed precision keeps every assignment made in `call` (torch included),
non-finite batches never become state, and `QuantizeWrapper` computes in its own dtype policy."""

import numpy as np
import pytest
import keras

from quadkeras.layers import QuadDense
from quadkeras.quantize import QuantizeWrapper, initialize_quantizers
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
