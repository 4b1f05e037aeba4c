"""get_config / .keras round trips, and a torch-trained model loading under other backends."""

import os

import numpy as np
import pytest
import keras

from quadkeras.layers import QuadConv2D, QuadDense, QuadDepthwiseConv2D
from tests.backend_utils import run_backend
from tests.layer_harness import check_config, check_keras_round_trip

LAYERS = [
    lambda: QuadConv2D(4, 3, strides=2, padding="same", neuron="ours", use_bias=False,
                       kernel_regularizer="l2", activation="relu", recompute=True),
    lambda: QuadConv2D(4, 3, groups=2, neuron="t2_4", dilation_rate=1),
    lambda: QuadConv2D(2, 1, neuron="t1", t1_linear=False),
    lambda: QuadDepthwiseConv2D(3, depth_multiplier=2, padding="same", neuron="t4"),
    lambda: QuadDense(3, neuron="t3", bias_initializer="ones"),
    lambda: QuadConv2D(4, 3, strides=2, padding=((1, 1), (0, 2)), neuron="ours"),
    lambda: QuadDepthwiseConv2D(3, strides=2, padding=1, neuron="ours"),
]


@pytest.mark.jax
@pytest.mark.parametrize("make", LAYERS)
def test_get_config_round_trip(make):  # more constructor variants than tests/test_layer_contract.py
    check_config(make())


def _tiny_model():
    inputs = keras.Input((8, 8, 4))
    x = QuadConv2D(4, 3, padding="same", neuron="ours", name="q_ours")(inputs)
    x = QuadConv2D(4, 3, groups=2, strides=2, padding=1, neuron="t2_4", name="q_grouped")(x)
    x = QuadDepthwiseConv2D(3, padding="same", neuron="t4", name="q_dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = QuadDense(3, neuron="ours", name="q_dense")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.jax
def test_keras_file_round_trip():
    model = _tiny_model()
    x = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 4)).astype("float32")
    model(x, training=True)  # move BN statistics
    check_keras_round_trip(model, x)  # identical outputs and variable paths


TRAIN_UNDER_TORCH = """
import numpy as np, keras, sys
sys.path.insert(0, {repo!r})
from tests.test_layer_serialization import _tiny_model
keras.utils.set_random_seed(0)
model = _tiny_model()
model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(1)
x = rng.uniform(-1, 1, (16, 8, 8, 4)).astype("float32")
y = rng.integers(0, 3, 16)
model.fit(x, y, batch_size=8, epochs=2, verbose=0)
model.save({path!r})
np.save({path!r} + ".x.npy", x)
np.save({path!r} + ".y.npy", keras.ops.convert_to_numpy(model(x, training=False)))
"""


@pytest.mark.jax
def test_torch_trained_model_loads_with_identical_outputs(tmp_path):
    if keras.backend.backend() == "torch":
        pytest.skip("loads a torch-trained model under another backend")
    path = str(tmp_path / "torch_trained.keras")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run_backend("torch", TRAIN_UNDER_TORCH.format(repo=repo, path=path))
    loaded = keras.models.load_model(path)
    x = np.load(path + ".x.npy")
    expected = np.load(path + ".y.npy")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)), expected,
                               rtol=1e-5, atol=1e-5)
