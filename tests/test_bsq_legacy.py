"""BSQ files written before the bit planes were a quantizer (`BitQuantWrapper` hosts holding the
planes as their own variables) load as `QuantizeWrapper`s with `BitPlanes`: same outputs, same
represented kernels and biases, same scheme and lasso, and they train and save on."""

import os

import numpy as np
import pytest
import keras

import quadkeras  # noqa: F401 (registers the layers a file names)
from quadkeras.bsq import BitPlanes, bsq_layers, is_bsq_layer, scheme_of, to_representation
from quadkeras.quantize import QuantizeWrapper

DATA = os.path.join(os.path.dirname(__file__), "data")


def _legacy():
    path = os.path.join(DATA, "legacy_bsq.npz")
    if not os.path.exists(path):
        pytest.skip("tests/data/legacy_bsq.npz missing")
    return np.load(path)


def _scheme(model):
    return sorted(f"{k}={v}" for k, v in scheme_of(model).items())


@pytest.mark.jax
@pytest.mark.parametrize("form", ["bits", "float"])
def test_old_bsq_files_load_with_the_same_function(form):
    data = _legacy()
    name = "legacy_bsq.keras" if form == "bits" else "legacy_bsq_float.keras"
    model = keras.models.load_model(os.path.join(DATA, name))
    layers = bsq_layers(model)
    assert [layer.name for layer in layers] == ["conv", "dw", "quad", "fc"]
    assert all(isinstance(layer, QuantizeWrapper) and isinstance(layer.kernel_quantizer, BitPlanes)
               and layer.kernel_quantizer.representation == form for layer in layers)
    assert _scheme(model) == sorted(data["scheme"].tolist())
    assert model.get_layer("quad").kernel_quantizer.branches == ["a", "b", "c"]
    y = keras.ops.convert_to_numpy(model(data["x"], training=False))
    np.testing.assert_allclose(y, data[f"y_{form}"], rtol=1e-5, atol=1e-5)
    for layer in layers:
        np.testing.assert_allclose(layer.kernel_quantizer.dequantized(), data[f"k_{layer.name}"], atol=1e-7)
    np.testing.assert_allclose(model.get_layer("fc").bias_quantizer.dequantized(), data["b_fc"], atol=1e-7)
    if form == "bits":  # the lasso: reg_strength (set before saving) x the old formula
        model(data["x_train"], training=True)
        lasso = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
        np.testing.assert_allclose(lasso, float(data["lasso"][0]), rtol=1e-5)


def test_an_old_file_saves_and_loads_again_and_converts(tmp_path):
    data = _legacy()
    model = keras.models.load_model(os.path.join(DATA, "legacy_bsq.keras"))
    y = keras.ops.convert_to_numpy(model(data["x"], training=False))
    path = str(tmp_path / "again.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(data["x"], training=False)), y, atol=1e-6)
    assert _scheme(again) == _scheme(model)
    finetune = to_representation(again, "float")  # new models are plain QuantizeWrappers
    assert all(type(layer) is QuantizeWrapper for layer in finetune.layers if is_bsq_layer(layer))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(finetune(data["x"], training=False)), y, atol=1e-5)
