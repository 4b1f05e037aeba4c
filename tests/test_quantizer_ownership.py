"""Quantizers own their variables (sublayers named after their slot), and files written
before that (variables on the host layer) still load: outputs and values equal."""

import os

import numpy as np
import pytest
import keras

from quadkeras.bsq.activation import BSQActivation
from quadkeras.quantize import QuantizeWrapper, quantized_layers
from quadkeras.quantizers import get

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy_quantizers")


def test_quantizer_variables_live_on_the_quantizer():
    w = QuantizeWrapper(keras.layers.Conv2D(4, 3), kernel_quantizer="lsq:4", input_quantizer="fakequant:8",
                        output_quantizer="pact:4")
    w.build((None, 8, 8, 3))
    assert [v.path for v in w.kernel_quantizer.weights] == ["conv2d/kernel/step"]
    assert [v.name for v in w.input_quantizer.weights] == ["min", "max", "initialized"]
    assert w.output_quantizer.name == "output" and w.output_quantizer.method == "pact"
    # the quantizers come first, in build order: the optimizer's slot order of older checkpoints
    assert [v.path for v in w.trainable_variables] == [
        "conv2d/kernel/step", "conv2d/output/alpha", "conv2d/conv2d/kernel", "conv2d/conv2d/bias"]


def test_one_spec_object_many_layers():
    spec = get("lsq:4")
    a = QuantizeWrapper(keras.layers.Dense(2), kernel_quantizer=spec)
    b = QuantizeWrapper(keras.layers.Dense(3), kernel_quantizer=spec)
    a.build((None, 4))
    b.build((None, 4))
    assert a.kernel_quantizer is not b.kernel_quantizer and not spec.built


def test_standalone_quantizer_builds_on_first_call():
    q = get("fakequant:8")
    y = q(np.linspace(-1.0, 1.0, 6, dtype="float32").reshape(2, 3), training=True)
    assert q.built and q.role == "activation" and tuple(y.shape) == (2, 3)
    assert [v.name for v in q.weights] == ["min", "max", "initialized"]


def test_quantizer_serialization_never_builds_it():
    w = QuantizeWrapper(keras.layers.Dense(2), kernel_quantizer="lsq:4")
    w.build((None, 4))
    config = keras.saving.serialize_keras_object(w.kernel_quantizer)
    assert "build_config" not in config and config["config"]["name"] == "kernel"
    assert not keras.saving.deserialize_keras_object(config).built


def _legacy():
    if not os.path.exists(LEGACY + ".keras"):
        pytest.skip("tests/data/legacy_quantizers.keras missing")
    return np.load(LEGACY + ".npz")


def test_legacy_file_loads_with_same_outputs_and_values():
    ref = _legacy()
    model = keras.models.load_model(LEGACY + ".keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(ref["x"], training=False)), ref["y"],
                               rtol=1e-5, atol=1e-5)
    # every variable has its old value: `conv/kernel_step` is now `conv/kernel/step`
    new = {v.path: v for v in model.weights}
    names = [str(n) for n in ref["names"]]
    assert len(new) == len(names)
    for i, old in enumerate(names):
        host, rest = old.split("/", 1)
        inner = old.replace(f"{host}/{host}/", f"{host}/", 1)  # the wrapped layer's own variable
        path = old if old in new else inner if inner in new else \
            "act2/pact/alpha" if old == "act2/act_alpha" else f"{host}/" + rest.replace("_", "/", 1)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(new[path]), ref[f"w{i}"], rtol=1e-6, err_msg=old)
    act = model.get_layer("act2")
    assert isinstance(act, BSQActivation) and [v.path for v in act.weights] == ["act2/pact/alpha"]
    # the host assigned its quantizers' variables (`init_state` "loaded"); their own load resolved it
    assert {q.init_state for layer in quantized_layers(model) for q in layer.quantizers()} == {"initialized"}


def test_legacy_file_resaves_in_the_new_layout(tmp_path):
    ref = _legacy()
    model = keras.models.load_model(LEGACY + ".keras")
    path = str(tmp_path / "new.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(ref["x"], training=False)), ref["y"],
                               rtol=1e-5, atol=1e-5)


def test_host_variables_of_the_wrong_count_are_refused():
    w = QuantizeWrapper(keras.layers.Dense(2), kernel_quantizer="lsq:4", input_quantizer="lsq:4")
    w.build((None, 3))
    with pytest.raises(ValueError, match="expected 0 or 3"):
        w.load_own_variables({"0": np.ones(()), "1": np.ones(())})
