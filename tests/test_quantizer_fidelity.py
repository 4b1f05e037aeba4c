"""Quantizer fidelity against the reference methods (SPEC §4): LSQ's runtime gradient scale."""

import numpy as np
import pytest
import keras

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
