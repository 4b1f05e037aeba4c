"""quadkeras.backend: every backend module imports on every backend and offers every hook, and
each private-Keras accessor of `keras_private` works on a tiny model (a Keras upgrade that
moves one fails here)."""

import importlib
import pathlib
import re

import numpy as np
import keras
import pytest

from quadkeras import backend
from quadkeras.backend import generic, keras_private

PACKAGE = pathlib.Path(backend.__file__).parent


@pytest.mark.parametrize("name", backend.BACKENDS)
def test_each_backend_module_imports_and_has_every_hook(name):
    module = importlib.import_module(f"quadkeras.backend.{name}")
    missing = [hook for hook in generic.__all__ if not hasattr(module, hook)]
    assert not missing, f"quadkeras.backend.{name} lacks {missing}"
    assert all(callable(getattr(module, h)) for h in generic.__all__ if not h.isupper())


def test_active_is_the_running_backend():
    assert backend.name() == keras.backend.backend()
    assert backend.active().__name__ == f"quadkeras.backend.{keras.backend.backend()}"


def test_every_backend_module_overrides_something():
    """A backend module that only re-exported the defaults would mean its hooks went missing."""
    for name in backend.BACKENDS:
        module = importlib.import_module(f"quadkeras.backend.{name}")
        own = [h for h in generic.__all__ if getattr(module, h) is not getattr(generic, h)]
        assert own, name


def _tiny_model():
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, name="dense")
    relu = keras.layers.ReLU(name="relu")
    model = keras.Model(inputs, relu(dense(inputs)))
    return model, dense, relu


def test_graph_accessors():
    model, dense, relu = _tiny_model()
    assert keras_private.consumers(dense) == [relu]
    nodes = keras_private.graph_nodes(model)
    by_op = {id(n.operation): n for n in nodes}
    assert id(dense) in by_op and id(relu) in by_op
    assert keras_private.producer(by_op[id(relu)].input_tensors[0]) is dense


def test_sublayers_is_the_tracked_list():
    class Host(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.a, self.b = keras.layers.Dense(1), keras.layers.Dense(2)

    host = Host()
    listed = keras_private.sublayers(host)
    assert listed == [host.a, host.b]
    listed.reverse()  # the list itself (mutable), not a copy
    assert keras_private.sublayers(host) == [host.b, host.a]


def test_variable_accessors():
    variable = keras.Variable(np.ones(3, "float32"))
    raw = keras_private.raw_value(variable)
    assert raw is not None
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(raw), np.ones(3))
    assert keras_private.in_stateless_scope() is False
    with keras.StatelessScope():
        assert keras_private.in_stateless_scope() is True


def test_optimizer_accessors():
    assert keras_private.check_optimizer_hooks() == []
    a, b = keras.Variable(np.ones(2, "float32")), keras.Variable(np.ones(3, "float32"))
    opt = keras.optimizers.SGD(learning_rate=0.5, global_clipnorm=1.0)
    opt.build([a, b])
    assert [keras_private.variable_index(opt, v) for v in (b, a)] == [1, 0]
    grads = [keras.ops.full((2,), 3.0), keras.ops.full((3,), 4.0)]
    clipped = keras_private.optimizer_clip_gradients(keras.optimizers.SGD, opt, grads)
    norm = np.sqrt(sum(float(np.sum(np.square(keras.ops.convert_to_numpy(g)))) for g in clipped))
    assert norm == pytest.approx(1.0, rel=1e-5)
    keras_private.optimizer_update_step(keras.optimizers.SGD, opt, [keras.ops.ones(2), keras.ops.ones(3)],
                                        [a, b], 0.5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), [0.5, 0.5])


def test_loss_accessors():
    model, _, _ = _tiny_model()
    model.compile(loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    y_pred = model(x)
    loss = keras_private.compute_loss(model, x, y, y_pred, None)
    expected = float(np.mean(np.square(keras.ops.convert_to_numpy(y_pred))))
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(expected, rel=1e-5)
    keras_private.track_loss(model, loss, 4)
    assert float(model.metrics[0].result()) == pytest.approx(expected, rel=1e-5)


def test_layer_tree_accessors():
    class Penalty(keras.layers.Layer):
        def call(self, x):
            self.add_loss(keras.ops.sum(x))
            return x

    inputs = keras.Input((3,))
    dense, penalty = keras.layers.Dense(2, name="dense"), Penalty(name="penalty")
    model = keras.Model(inputs, penalty(dense(inputs)))
    layers = keras_private.flat_layers(model)
    assert layers[0] is model and dense in layers and penalty in layers
    stamp = keras_private.tree_stamp(layers)
    assert stamp[layers.index(dense)] == (0, 2, 0)  # no sublayer; kernel and bias
    model(np.ones((1, 3), "float32"))
    assert len(keras_private.own_losses(penalty)) == 1
    keras_private.clear_own_losses(layers)
    assert keras_private.own_losses(penalty) == [] and model.losses == []
    model(np.ones((1, 3), "float32"))
    keras_private.keras_clear_losses(model)
    assert model.losses == []
    assert keras_private.call_takes_training(model) is True
    model.compile(loss="mse")
    y_pred = keras.ops.ones((2, 2))
    loss = keras_private.compiled_loss(model)(keras.ops.zeros((2, 2)), y_pred, None)
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(1.0)
    added = keras_private.aggregate_added_loss(model, keras.ops.ones((3,)))
    assert float(keras.ops.convert_to_numpy(added)) == pytest.approx(3.0)
    only = keras_private.only_compiled_loss(keras_private.compiled_loss(model))
    assert isinstance(only, keras.losses.Loss)  # "mse" resolved to a Loss object
    assert keras_private.loss_function_kwargs(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True))["from_logits"] is True
    if keras.backend.backend() == "torch":
        assert keras_private.runs_keras_train_step(model)

        class OwnLoss(keras.Model):
            def compute_loss(self, *args, **kwargs):
                return super().compute_loss(*args, **kwargs)
        assert not keras_private.runs_keras_train_step(OwnLoss(inputs, dense(inputs)))


def test_op_name_uniquifier_numbers_names():
    uniquify = keras_private.op_name_uniquifier()
    first, second = uniquify("quadkeras_probe"), uniquify("quadkeras_probe")
    assert first != second and first.startswith("quadkeras_probe")


def test_no_private_keras_outside_the_backend_package():
    """`keras.src` and the private attributes keras_private wraps appear only in
    quadkeras/backend/ (the one place to fix on a Keras upgrade)."""
    pattern = re.compile(r"keras\.src|\._(layers|outbound_nodes|nodes_by_depth|keras_history|"
                         r"loss_tracker|compute_loss|get_variable_index|value)\b|"
                         r"super\(\)\._(backend_update_step|clip_gradients)\b")
    root = PACKAGE.parent
    found = [f"{path.relative_to(root.parent)}:{number}"
             for path in sorted(root.rglob("*.py")) if PACKAGE not in path.parents
             for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert [site for site in found if site.split(":")[0] not in KNOWN_PENDING] == []


# Files with private-API sites still outside quadkeras/backend/ (another change was editing
# them when this test was written); the list may only shrink.
KNOWN_PENDING = ["quadkeras/training/jit.py", "quadkeras/training/trainer.py", "quadkeras/quantizers/hosting.py"]
