"""PTQ calibration of fake-quant ranges and the quadratic branch-product quantizer."""

import numpy as np
import pytest
import keras

from quadkeras.layers import QuadConv2D
from quadkeras.quantize import QuantizeWrapper, quantize_model
from quadkeras.quantize.calibration import calibrate

RNG = np.random.default_rng(0)


def _dense_model(quantizer="fakequant:8"):
    inp = keras.Input((64,))
    return keras.Model(inp, QuantizeWrapper(keras.layers.Dense(2), input_quantizer=quantizer)(inp))


def _quant_error(x, lo, hi, bits=8):
    step = (hi - lo) / (2 ** bits - 1)
    q = np.clip(np.round((x - lo) / step), 0, 2 ** bits - 1) * step + lo
    return float(np.mean((x - q) ** 2))


@pytest.mark.jax
def test_minmax_percentile_and_mse_ranges():
    x = (RNG.standard_normal((512, 64)) * RNG.standard_normal((512, 64))).astype("float32")  # heavy tails
    model = _dense_model()
    (lo, hi), = calibrate(model, x, method="minmax").values()
    assert np.isclose(lo, x.min(), rtol=1e-3) and np.isclose(hi, x.max(), rtol=1e-3)
    (plo, phi), = calibrate(model, x, method="percentile", percentile=99.9).values()
    assert np.isclose(phi, np.percentile(x, 99.9), rtol=0.05) and np.isclose(plo, np.percentile(x, 0.1), rtol=0.05)
    (mlo, mhi), = calibrate(model, x, method="mse").values()
    assert _quant_error(x, mlo, mhi) <= _quant_error(x, x.min(), x.max())
    four_bit = _dense_model("fakequant:4")
    (mlo, mhi), = calibrate(four_bit, x, method="mse").values()
    assert mhi < 0.6 * x.max()  # the product's tail is clipped ...
    assert _quant_error(x, mlo, mhi, 4) < 0.5 * _quant_error(x, x.min(), x.max(), 4)  # ... for less error
    q = four_bit.layers[1].input_quantizer
    assert np.isclose(float(keras.ops.convert_to_numpy(q.min_var)), mlo)
    assert not q.awaiting_data_init  # calibrated ranges are not re-initialised by training
    assert q.observer is None


def test_calibration_observes_float_activations_and_bad_arguments():
    model = _dense_model()
    x = RNG.standard_normal((32, 64)).astype("float32")
    before = keras.ops.convert_to_numpy(model(x))
    calibrate(model, x)
    with pytest.raises(ValueError, match="calibration method='kl'.*'mse'"):
        calibrate(model, x, method="kl")
    with pytest.raises(ValueError, match="percentile=40"):
        calibrate(model, x, method="percentile", percentile=40)
    assert before.shape == (32, 2)


@pytest.mark.jax
def test_product_quantizer_rounds_the_branch_product():
    inp = keras.Input((6, 6, 3))
    wrapped = QuantizeWrapper(QuadConv2D(4, 3, padding=1, neuron="ours"), product_quantizer="fakequant:2")
    model = keras.Model(inp, wrapped(inp))
    x = RNG.standard_normal((8, 6, 6, 3)).astype("float32")
    calibrate(model, x, method="minmax")
    exact = keras.ops.convert_to_numpy(wrapped.layer(x, training=False))
    got = keras.ops.convert_to_numpy(model(x, training=False))
    assert not np.allclose(got, exact, atol=1e-3)  # 2-bit product: visibly rounded
    products = got - _linear_term(wrapped.layer, x)  # output = Q(a * b) + c
    assert len(np.unique(np.round(products, 4))) <= 4
    with pytest.raises(ValueError, match="product_quantizer for Dense"):
        QuantizeWrapper(keras.layers.Dense(2), product_quantizer="fakequant:8")


def _linear_term(layer, x):
    """c = BN_c(W_c x) of an `ours` layer at inference, from its weights (NumPy)."""
    kernel, bias = layer.folded_kernel_and_bias()
    f = layer.filters
    z = keras.ops.convert_to_numpy(layer._linear(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(kernel)))
    return z[..., 2 * f:] + bias[2 * f:]


def test_int8_qat_preset_quantizes_the_product_of_quadratic_layers():
    from quadkeras.models import build_model

    model = quantize_model(build_model("qresnet14"), "int8_qat")
    wrapper = model.get_layer("stage1_block1_conv1")
    assert wrapper.product_quantizer is not None and wrapper.branch_quantizer is not None
    assert model.get_layer("stem_conv").product_quantizer is None
