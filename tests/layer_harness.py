"""A Keras-style layer test (the checks of `keras.src.testing.TestCase.run_layer_test`, our code).

`run_layer_test(make_layer, input_shape)` checks, on the current backend:

1. config: `from_config(get_config())` gives the same config; the layer serializes to JSON and
   deserializes to the same class (it is registered);
2. symbolic call: a `keras.Input` gives the shape `compute_output_shape` promises (and
   `expected_output_shape` when given);
3. eager call on real data: same shape, float32, finite values;
4. fit: one optimizer step of a model around the layer gives a finite loss and moves at least
   one trainable variable;
5. `.keras` round trip of that trained model: the loaded model gives identical outputs;
6. mixed precision (`mixed_float16`, `mixed_bfloat16`): the output has the compute dtype and
   is finite, every variable stays float32, and (`mixed_float16`, loss scaling) a training
   step gives a finite loss.

`make_layer` must return a fresh layer each call (wrappers: a fresh inner layer too).

Example:

>>> import keras
>>> run_layer_test(lambda: keras.layers.Dense(3), (2, 4))  # doctest: +SKIP
"""

import copy
import json
import os
import tempfile

import keras
import numpy as np

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def run_layer_test(make_layer, input_shape, expected_output_shape=None, mixed_precision=MIXED_POLICIES,
                   atol=1e-6, seed=0, same_variable_paths=True):
    """Run the checks above; an AssertionError names the one that failed.

    `same_variable_paths=False` skips comparing variable paths after loading (values are still
    compared through the outputs): wrappers' inner variables load under another path.
    """
    x = np.random.default_rng(seed).uniform(-1, 1, input_shape).astype("float32")
    check_config(make_layer())
    model = check_symbolic(make_layer(), input_shape, expected_output_shape)
    check_eager(make_layer(), x)
    check_fit(model, x)
    check_keras_round_trip(model, x, atol, same_variable_paths)
    for i, policy in enumerate(mixed_precision):  # one training step (the first policy's) is enough
        check_mixed_precision(make_layer, x, policy, fit=i == 0)


def check_config(layer):
    config = layer.get_config()
    clone = type(layer).from_config(copy.deepcopy(config))  # Wrapper.from_config pops 'layer'
    assert clone.get_config() == config, f"{type(layer).__name__}: from_config(get_config()) differs"
    serialized = keras.saving.serialize_keras_object(layer)
    json.dumps(serialized)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(restored) is type(layer), f"{type(layer).__name__} is not registered: got {type(restored)}"


def _model(layer, input_shape):
    inputs = keras.Input(input_shape[1:])
    return keras.Model(inputs, layer(inputs))


def check_symbolic(layer, input_shape, expected_output_shape=None):
    """Symbolic call vs `compute_output_shape`; returns the functional model around the layer."""
    model = _model(layer, input_shape)
    symbolic = tuple(model.output.shape)
    promised = tuple(layer.compute_output_shape((None,) + tuple(input_shape[1:])))
    assert symbolic == promised, f"symbolic output {symbolic} != compute_output_shape {promised}"
    if expected_output_shape is not None:
        assert symbolic[1:] == tuple(expected_output_shape)[1:], (symbolic, expected_output_shape)
    return model


def check_eager(layer, x):
    y = layer(x)
    promised = tuple(layer.compute_output_shape(x.shape))
    assert tuple(y.shape) == promised, f"eager output {tuple(y.shape)} != compute_output_shape {promised}"
    assert keras.backend.standardize_dtype(y.dtype) == "float32", y.dtype
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(y))), "eager output is not finite"


def _train_step(model, x, optimizer):
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)  # tiny shapes: XLA costs more
    target = np.zeros(tuple(model.output.shape[1:]), "float32")[None].repeat(len(x), 0)
    return float(np.asarray(model.train_on_batch(x, target)))


def check_fit(model, x):
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
    assert before, "the layer has no trainable variables"
    loss = _train_step(model, x, keras.optimizers.SGD(0.1))
    assert np.isfinite(loss), f"training loss {loss}"
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "fit moved no variable"


def check_keras_round_trip(model, x, atol=1e-6, same_variable_paths=True):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    if same_variable_paths:
        paths = [v.path for v in model.weights]
        loaded_paths = [v.path for v in loaded.weights]
        assert loaded_paths == paths, f"variable paths changed on load: {paths} -> {loaded_paths}"
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)), expected,
                               rtol=0, atol=atol, err_msg=".keras round trip changed the outputs")


def check_mixed_precision(make_layer, x, policy, fit=True):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        layer = make_layer()
        model = _model(layer, x.shape)
        compute = keras.mixed_precision.dtype_policy().compute_dtype
        y = layer(x)
        assert keras.backend.standardize_dtype(y.dtype) == compute, f"{policy}: output {y.dtype}"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))))
        loss = _train_step(model, x, keras.optimizers.SGD(0.01)) if fit else 0.0
    finally:
        keras.config.set_dtype_policy(previous)
    bad = [v.path for v in layer.variables if keras.backend.standardize_dtype(v.dtype) != "float32"]
    assert not bad, f"{policy}: variables not float32: {bad}"
    assert np.isfinite(loss), f"{policy}: training loss {loss}"
