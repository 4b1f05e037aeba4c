"""`quadkeras.training.fast_step`: the eager torch train step made from lists found once
trains exactly as Keras' own step (weights, losses with `add_loss` and regularizer terms,
metrics, a layer frozen between fits, mixed precision), notices a changed layer tree, and
stays out of the way where it must (compiled steps, custom steps, no loss)."""

import numpy as np
import pytest
import keras

from quadkeras.training import fast_step
from quadkeras.training.fast_step import fast_torch_train_step, is_fast_torch_train_step

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="the fast train step is torch only (TF and JAX trace the step once)")


@keras.saving.register_keras_serializable(package="quadkeras_tests")
class ActivityPenalty(keras.layers.Layer):
    """Adds 0.01 * mean(x^2) with `add_loss` in every call."""

    def call(self, x):
        self.add_loss(0.01 * keras.ops.mean(keras.ops.square(x)))
        return x


def _model(fast, seed=1, optimizer=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, kernel_regularizer="l2", name="first")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = ActivityPenalty(name="penalty")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="last")(x))
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1, momentum=0.9), loss="mse",
                  metrics=["mae"])
    assert fast_torch_train_step(model, fast) is fast
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 6)).astype("float32"), rng.standard_normal((16, 3)).astype("float32")


def _fit_twice(model):
    """Two epochs, then one more with the first layer frozen: (weights, both histories)."""
    x, y = _data()
    first = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False).history
    model.get_layer("first").trainable = False
    second = model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    return [keras.ops.convert_to_numpy(v) for v in model.weights], first, second


def _count_fast_steps(monkeypatch):
    calls = []
    real = fast_step.train_step

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(fast_step, "train_step", counting)
    return calls


def test_fit_matches_keras_step_with_added_losses_regularizer_and_freezing(monkeypatch):
    keras_weights, keras_first, keras_second = _fit_twice(_model(False))
    calls = _count_fast_steps(monkeypatch)
    fast = _model(True)
    assert is_fast_torch_train_step(fast)
    fast_weights, fast_first, fast_second = _fit_twice(fast)
    assert len(calls) == 12  # 3 epochs x 4 batches, every one on the fast step
    for a, b in zip(keras_weights, fast_weights):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    for keras_history, fast_history in ((keras_first, fast_first), (keras_second, fast_second)):
        assert keras_history.keys() == fast_history.keys() == {"loss", "mae"}
        for key in keras_history:
            np.testing.assert_allclose(fast_history[key], keras_history[key], rtol=1e-6)
    # the frozen layer's kernel did not move in the last epoch, its weights equal Keras'
    assert not fast.get_layer("first").trainable


def test_mixed_float16_loss_scaling_matches_keras():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        results = []
        for fast in (False, True):
            model = _model(fast, optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05)))
            x, y = _data()
            history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
            results.append(([keras.ops.convert_to_numpy(v) for v in model.weights], history["loss"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5)


def test_lists_are_made_again_when_the_layer_tree_changes():
    model = _model(True)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    walks = fast_step._walks(model)
    assert fast_step._walks(model) is walks  # unchanged tree: the same lists
    penalty = model.get_layer("penalty")
    penalty._tracker.unlock()  # Keras locks a built layer's state; a layer may open it again
    extra = penalty.add_weight(shape=(2,), initializer="ones", name="extra")
    remade = fast_step._walks(model)
    assert remade is not walks and any(w is extra for w in remade.weights)
    # torch's `zero_grad()` set, as the model has it now
    assert [id(p) for p in remade.parameters] == [id(p) for p in model.parameters()]


def test_turned_off_and_refused_where_keras_or_another_step_decides(tmp_path):
    model = _model(True)
    assert fast_torch_train_step(model, False) is False and not is_fast_torch_train_step(model)
    assert "train_step" not in model.__dict__ and "_clear_losses" not in model.__dict__

    class OwnStep(keras.Model):
        def train_step(self, data):
            return super().train_step(data)

    inputs = keras.Input((2,))
    custom = OwnStep(inputs, keras.layers.Dense(1)(inputs))
    assert fast_torch_train_step(custom) is False

    model.train_step = lambda data: {}  # e.g. data-parallel training's step
    assert fast_torch_train_step(model) is False and not is_fast_torch_train_step(model)

    saved = _model(True)
    saved.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert not is_fast_torch_train_step(loaded)


def test_no_loss_is_keras_error():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd")
    assert fast_torch_train_step(model)
    with pytest.raises(ValueError, match="No loss to compute"):
        model.train_on_batch(np.ones((2, 2), "float32"), np.ones((2, 1), "float32"))


def test_compiled_step_runs_keras_step(monkeypatch):
    calls = _count_fast_steps(monkeypatch)
    keras_weights = None
    for fast in (False, True):
        model = _model(fast)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
        x, y = _data()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
        if keras_weights is None:
            keras_weights = weights
    assert calls == []  # traced: Keras' own step
    for a, b in zip(keras_weights, weights):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_traced_branch_reads_keras_lists_and_matches(monkeypatch):
    """Data-parallel training under torch.compile traces `train_step` itself: there it reads
    Keras' own lists (run here eagerly, `is_compiling` patched to say yes)."""
    import torch

    keras_weights, keras_first, _ = _fit_twice(_model(False))
    model = _model(False)
    model.train_step = lambda data: fast_step.train_step(model, data)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(fast_step, "_walks", lambda model: pytest.fail("eager lists made"))
    weights, first, _ = _fit_twice(model)
    for a, b in zip(keras_weights, weights):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(first["loss"], keras_first["loss"], rtol=1e-6)


@pytest.mark.parametrize("case", ["categorical", "smoothed", "sparse", "sparse_column"])
def test_cross_entropy_in_raw_torch_equals_keras_loss(case):
    import torch

    rng = np.random.default_rng(3)
    logits = torch.tensor(rng.standard_normal((5, 7)).astype("float32"))
    labels = rng.integers(0, 7, 5)
    if case.startswith("sparse"):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        y = torch.tensor(labels.reshape(-1, 1) if case == "sparse_column" else labels)
    else:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1 if case == "smoothed" else 0.0)
        y = torch.tensor(np.eye(7, dtype="float32")[labels])
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(7)(inputs))
    model.compile(optimizer="sgd", loss=loss)
    compiled = model._compile_loss
    expected = compiled(y, logits, None)  # Keras' own (builds the CompileLoss)
    fast = fast_step._cross_entropy(compiled, y, logits)
    assert fast is not None
    np.testing.assert_allclose(fast.numpy(), expected.numpy(), rtol=1e-7, atol=0)
    # refused, so that Keras computes it: probabilities as sparse labels, a mask
    if case == "sparse":
        assert fast_step._cross_entropy(compiled, y.float(), logits) is None
    masked = logits.clone()
    masked._keras_mask = torch.ones(5, dtype=torch.bool)
    assert fast_step._cross_entropy(compiled, y, masked) is None


def test_other_losses_are_left_to_keras():
    import torch

    model = _model(True)  # mse
    model.fit(*_data(), batch_size=8, epochs=1, verbose=0)
    assert fast_step._cross_entropy(model._compile_loss, torch.zeros(2, 3), torch.zeros(2, 3)) is None


def test_fit_with_sparse_cross_entropy_matches_keras(monkeypatch):
    """The trainer's loss: the raw-torch cross-entropy runs in every fast step, same weights."""
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal((16, 6)).astype("float32"), rng.integers(0, 3, 16)
    used = []
    real = fast_step._cross_entropy

    def recording(*args):
        loss = real(*args)
        used.append(loss is not None)
        return loss
    monkeypatch.setattr(fast_step, "_cross_entropy", recording)
    results = []
    for fast in (False, True):
        model = _model(fast)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["sparse_categorical_accuracy"])
        history = model.fit(x, labels, batch_size=4, epochs=2, verbose=0, shuffle=False).history
        results.append(([keras.ops.convert_to_numpy(v) for v in model.weights], history))
    # `fit` builds Keras' CompileLoss before its first step: every step computes it in raw torch
    assert used == [True] * 8
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    for key in results[0][1]:
        np.testing.assert_allclose(results[1][1][key], results[0][1][key], rtol=1e-6)
