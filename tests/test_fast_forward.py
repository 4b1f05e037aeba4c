"""`quadkeras.training.fast_forward`: the torch fast forward computes what Keras' `Functional`
path computes (outputs, loss with `add_loss` terms, gradients, BatchNorm moving statistics,
mixed precision), skips `Layer.__call__` where it can and falls back where it must."""

import os
from unittest import mock

import numpy as np
import pytest
import keras

from quadkeras.bsq import set_bsq_decay, to_bsq
from quadkeras.layers import QuadConv2D
from quadkeras.models import build_model
from quadkeras.quantize import initialize_quantizers, quantize_model, scheme_from_flags
from quadkeras.training import fast_torch_forward, is_fast_torch_forward

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="the fast forward is torch only (TF and JAX trace the step once)")


def _tiny_resnet(num_classes=3):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    y = QuadConv2D(4, 3, padding="same", neuron="t4", name="quad")(x)
    y = keras.layers.BatchNormalization(name="bn")(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.ops.multiply(x, 0.5)  # an operation node with a constant argument, not a layer
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="fc")(x))


def _batch(shape=(2, 6, 6, 2), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _step(model, x):
    """(outputs, loss, gradients, non-trainable values) of one training forward + backward."""
    import torch

    y = model(x, training=True)
    loss = keras.ops.mean(keras.ops.square(keras.ops.cast(y, "float32")))
    losses = model.losses
    for extra in losses:
        loss = loss + keras.ops.cast(extra, "float32")
    grads = torch.autograd.grad(loss, [v.value for v in model.trainable_variables])
    as_np = keras.ops.convert_to_numpy
    return ([as_np(y)], [as_np(loss)], [as_np(g) for g in grads],
            [as_np(v) for v in model.non_trainable_variables], len(losses))


def _both_paths(model, x):
    """`_step` on Keras' path, then (from the same variable values) on the fast path."""
    start = [keras.ops.convert_to_numpy(v) for v in model.variables]
    fast_torch_forward(model, False)
    keras_side = _step(model, x)
    for v, value in zip(model.variables, start):
        v.assign(value)
    assert fast_torch_forward(model) and is_fast_torch_forward(model)
    fast_side = _step(model, x)
    for a, b in zip(keras_side[:4], fast_side[:4]):
        assert len(a) == len(b)
        for u, w in zip(a, b):
            np.testing.assert_allclose(w, u, rtol=1e-6, atol=1e-6)
    assert keras_side[4] == fast_side[4]
    return keras_side


def _layer_calls(model, x):
    """How many `Layer.__call__` one training forward of `model` runs."""
    original = keras.Layer.__call__
    count = [0]

    def counting(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)

    model(x, training=True)  # the plan is made (with the unpatched class) before counting
    with mock.patch.object(keras.Layer, "__call__", counting):
        model(x, training=True)
    return count[0]


def test_tiny_resnet_with_quadratic_layer_matches_keras_and_skips_layer_calls():
    model, x = _tiny_resnet(), _batch()
    _, _, _, moving, _ = _both_paths(model, x)
    assert any(np.abs(m).sum() > 0 for m in moving)  # the BN moving statistics did move
    assert _layer_calls(model, x) == 1  # only the model's own __call__
    fast_torch_forward(model, False)
    assert not is_fast_torch_forward(model)
    assert _layer_calls(model, x) == 1 + len(model.layers) - 1  # every layer but the Input


@pytest.mark.parametrize("name", ["resnet20", "qresnet14"])
def test_zoo_float_model_runs_raw_torch_layers_and_matches_keras(name):
    """The zoo's float ResNet-20 (strided 1x1 shortcuts, ZeroPadding2D, quadkeras Conv2D / BN)
    and QResNet14 (QuadConv2D `ours`): every layer but the input takes a raw-torch forward
    (`quadkeras.training.torch_layers`)."""
    from quadkeras.training import torch_layers

    keras.utils.set_random_seed(0)
    model = build_model(name, num_classes=4, input_shape=(8, 8, 3))
    x = _batch((2, 8, 8, 3))
    calls = []
    original = torch_layers.native_layer_call

    def counting(layer):
        run = original(layer)
        if run is None:
            return None

        def counted(*args):
            calls.append(layer.name)
            return run(*args)
        return counted

    with mock.patch.object(torch_layers, "native_layer_call", counting):
        _both_paths(model, x)
    assert len(set(calls)) == len(model.layers) - 1


def test_lsq_w4a4_resnet20_matches_keras():
    keras.utils.set_random_seed(0)
    model = quantize_model(build_model("resnet20", num_classes=4, input_shape=(8, 8, 3)),
                           scheme_from_flags("lsq", 4, 4))
    x = _batch((2, 8, 8, 3))
    initialize_quantizers(model, x)
    _both_paths(model, x)
    assert _layer_calls(model, x) < 20  # Keras' path: one per layer and wrapped layer (~90)


def test_bsq_lasso_losses_are_collected():
    inputs = keras.Input((6, 6, 2))
    x = QuadConv2D(4, 3, padding="same", neuron="t4", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    bsq = to_bsq(keras.Model(inputs, keras.layers.Dense(3, name="fc")(x)), bits=8)
    set_bsq_decay(bsq, 0.5)
    *_, n_losses = _both_paths(bsq, _batch())
    assert n_losses == 2  # the lasso of conv and fc, collected once per call
    bsq(_batch(), training=False)
    assert len(bsq.losses) == 0


def test_mixed_float16_matches_keras():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _tiny_resnet()
        outputs = _both_paths(model, _batch())[0]
        assert outputs[0].dtype == np.float16  # the Dense ran in float16, as on Keras' path
    finally:
        keras.config.set_dtype_policy(policy)


def test_nested_functional_model_runs_fast_inside():
    inner = _tiny_resnet(num_classes=4)
    inputs = keras.Input((6, 6, 2))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs)))
    x = _batch()
    _both_paths(outer, x)
    assert is_fast_torch_forward(inner)
    assert _layer_calls(outer, x) == 2  # the outer model and the nested one


def test_masked_model_falls_back_to_keras():
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(7, 3, mask_zero=True)(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    tokens = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 6, 0]], "int32")
    expected = keras.ops.convert_to_numpy(model(tokens, training=True))
    fast_torch_forward(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(tokens, training=True)), expected, rtol=1e-6)
    assert _layer_calls(model, tokens) == 4  # Keras' path: model, Embedding, pooling, Dense


def test_inference_without_training_flag_and_off_switch():
    model, x = _tiny_resnet(), _batch()
    expected = keras.ops.convert_to_numpy(model(x))
    fast_torch_forward(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, rtol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert fast_torch_forward(model, False) is False and not is_fast_torch_forward(model)


def test_save_and_load_are_unaffected(tmp_path):
    model, x = _tiny_resnet(), _batch()
    model(x, training=True)
    fast_torch_forward(model)
    model(x, training=True)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert not is_fast_torch_forward(loaded)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)),
                               keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-6)


def test_train_runs_eager_torch_steps_on_the_fast_forward(tmp_path):
    from quadkeras.training import is_fast_torch_train_step, train
    from tests.test_training import TINY_VGG, tiny_config

    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((is_fast_torch_forward(self.model), is_fast_torch_train_step(self.model)))

    train(tiny_config(tmp_path, model=TINY_VGG, epochs=1, max_train=64, max_test=32),
          callbacks=[Probe()])
    assert seen and all(forward and step for forward, step in seen)
