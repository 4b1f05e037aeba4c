"""MSE initialisation of LSQ steps (`quadkeras.quantize.lsq_init`): the chosen step against a
scalar NumPy search, per-channel kernel steps, activation steps from observed data."""

import keras
import numpy as np
import pytest


def _brute_step(v, qn, qp):
    """Scalar reference: the grid step (alpha * max|v| / qp) with the least squared error."""
    top = float(np.abs(v).max())
    errors = []
    for alpha in np.linspace(0.01, 1.0, 100):
        s = alpha * top / qp
        q = np.array([min(max(round(float(x) / s), -qn), qp) * s for x in v])
        errors.append((float(((v - q) ** 2).mean()), s))
    return min(errors)[1]


@pytest.mark.jax
@pytest.mark.parametrize("qn,qp", [(8, 7), (0, 15), (2, 1)])
def test_mse_step_matches_a_scalar_search(qn, qp):
    from quadkeras.quantize.lsq_init import mse_step

    v = np.random.default_rng(qp).standard_t(3, 400)
    v = np.abs(v) if qn == 0 else v
    np.testing.assert_allclose(mse_step(v[:, None], qn, qp)[0], _brute_step(v, qn, qp), rtol=1e-9)


@pytest.mark.jax
def test_mse_init_sets_per_channel_kernel_and_activation_steps():
    from quadkeras.layers import QuadConv2D
    from quadkeras.quantize import QuantizeWrapper
    from quadkeras.quantize.lsq_init import mse_init_lsq, mse_step

    inp = keras.Input((6, 6, 3))
    wrapper = QuantizeWrapper(QuadConv2D(4, 3, padding="same"), kernel_quantizer="lsq:4:per_channel",
                              input_quantizer="lsq:4", product_quantizer="lsq:8:signed")
    model = keras.Model(inp, wrapper(inp))
    x = np.abs(np.random.default_rng(0).standard_normal((8, 6, 6, 3))).astype("float32")
    steps = mse_init_lsq(model, x)
    assert sorted(steps) == sorted(f"{wrapper.name}/{s}" for s in ("kernel", "input", "product"))
    kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
    expected = mse_step(kernel.reshape(-1, kernel.shape[-1]), 8, 7)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(wrapper.kernel_quantizer.step), expected, rtol=1e-5)
    expected_input = mse_step(x.reshape(-1, 1), 0, 15)[0]  # every input element observed (< 200k)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(wrapper.input_quantizer.step)),
                               expected_input, rtol=1e-5)
    assert not wrapper.input_quantizer.awaiting_data_init


@pytest.mark.jax
def test_mse_init_ignores_non_finite_activations():
    from quadkeras.quantize import QuantizeWrapper
    from quadkeras.quantize.lsq_init import mse_init_lsq, mse_step

    inp = keras.Input((4,))
    wrapper = QuantizeWrapper(keras.layers.Dense(2), input_quantizer="lsq:4")
    model = keras.Model(inp, wrapper(inp))
    x = np.abs(np.random.default_rng(1).standard_normal((32, 4))).astype("float32")
    x[3, 1] = np.inf
    mse_init_lsq(model, x)
    finite = x[np.isfinite(x)].reshape(-1, 1)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(wrapper.input_quantizer.step)),
                               mse_step(finite, 0, 15)[0], rtol=1e-5)
