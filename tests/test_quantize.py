"""QuantizeWrapper and quantize_model: layer parity, .keras round trips, rules, training."""

import numpy as np
import pytest
import keras

from quadkeras.layers import QuadConv2D, QuadDense, QuadDepthwiseConv2D
from quadkeras.models import build_model
from quadkeras.quantize import (QuantizeOutput, QuantizeWrapper, initialize_quantizers, quantize_model, quantized_layers,
                                scheme_from_flags)
from tests.backend_utils import run_backend

RNG = np.random.default_rng(0)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
LAYERS = {
    "conv": lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
    "depthwise": lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
    "dense": lambda: keras.layers.Dense(5, activation="tanh"),
    "quadconv": lambda: QuadConv2D(4, 3, padding="same"),
    "quadconv_t4": lambda: QuadConv2D(4, 3, neuron="t4", use_bias=True),
    "quaddepthwise": lambda: QuadDepthwiseConv2D(3, padding="same"),
    "quaddense": lambda: QuadDense(3, neuron="t2_4"),
}


def _input(name):
    return RNG.standard_normal((2, 5) if "dense" in name else (2, 8, 8, 3)).astype("float32")


@pytest.mark.jax
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_wrapper_equals_layer_with_quantized_kernel(name):
    x = _input(name)
    wrapper = QuantizeWrapper(LAYERS[name](), kernel_quantizer="lsq:3:per_channel")
    out = keras.ops.convert_to_numpy(wrapper(x, training=False))
    kernel = wrapper.quantized_kernel()
    assert len(np.unique(kernel)) < kernel.size  # really quantized
    wrapper.layer.kernel.assign(kernel)  # the float layer with that kernel: same output
    ref = keras.ops.convert_to_numpy(wrapper.layer(x, training=False))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_depthwise_per_channel_means_output_channel():
    wrapper = QuantizeWrapper(keras.layers.DepthwiseConv2D(3, depth_multiplier=2), "fakequant:8")
    wrapper.build((None, 8, 8, 3))
    assert [tuple(v.shape) for v in wrapper.kernel_quantizer.weights if v.name == "max"] == [(6,)]


def _tiny_model(kernel="lsq:4", inp="lsq:4", out=None):
    inputs = keras.Input((8, 8, 3))
    x = QuantizeWrapper(keras.layers.Conv2D(4, 3, padding="same", name="c1"), kernel, None)(inputs)
    x = QuantizeWrapper(QuadConv2D(4, 3, padding="same", name="q1"), kernel, inp, out)(x)
    x = QuantizeWrapper(QuadDepthwiseConv2D(3, padding="same", name="dw"), kernel, "pact:4", out)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = QuantizeWrapper(keras.layers.Dense(3, name="fc"), kernel, "lqnet:2", out)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.jax
def test_keras_round_trip(tmp_path):
    model = _tiny_model(out="fakequant:8")
    model.compile("adam", LOSS)
    x = RNG.random((8, 8, 8, 3)).astype("float32")
    model.fit(x, RNG.integers(0, 3, 8), epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "q.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert [v.name for v in loaded.weights] == [v.name for v in model.weights]
    assert loaded.get_layer("q1").quantization_bits() == {"weight": 4, "activation": 4}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs once, in the TF process")
def test_saved_under_torch_loads_under_tensorflow(tmp_path):
    path = str(tmp_path / "q.keras")
    code = (
        "import numpy as np, keras\n"
        "from tests.test_quantize import _tiny_model, LOSS\n"
        "m = _tiny_model(out='fakequant:8'); m.compile('adam', LOSS)\n"
        "x = np.random.default_rng(1).random((8, 8, 8, 3)).astype('float32')\n"
        "m.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)\n"
        f"m.save({path!r}); np.save({path!r} + '.npy', m.predict(x, verbose=0))\n"
    )
    run_backend("torch", code)
    x = np.random.default_rng(1).random((8, 8, 8, 3)).astype("float32")
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), np.load(path + ".npy"), rtol=1e-4, atol=1e-5)


def _resnet(name="resnet20"):
    return build_model(name, num_classes=4, input_shape=(8, 8, 3))


def test_quantize_model_defaults_keep_first_last_and_shortcuts_float():
    model = _resnet()
    q = quantize_model(model, scheme_from_flags("lsq", 4, 4))
    wrapped = {layer.name for layer in quantized_layers(q)}
    assert "stem_conv" not in wrapped and "logits" not in wrapped
    assert not any("shortcut" in n for n in wrapped)
    assert len(wrapped) == 18  # 19 convs - stem
    full = quantize_model(model, scheme_from_flags("lsq", 4, 4, quantize_first_last=True, quantize_shortcut=True))
    assert len(quantized_layers(full)) == 22
    x = RNG.random((2, 8, 8, 3)).astype("float32")
    assert q.predict(x, verbose=0).shape == (2, 4)


def test_rules_by_name_type_and_skip():
    scheme = {"kernel": "lsq:4", "input": "lsq:4", "rules": [
        {"name": "^stage3", "kernel": "lsq:2", "input": "lsq:2"},
        {"type": "dense", "skip": False, "kernel": "lsq:8", "input": None},
        {"name": "stage2_block1_conv1", "skip": True},
    ]}
    q = quantize_model(_resnet(), scheme)
    assert q.get_layer("stage3_block2_conv1").quantization_bits() == {"weight": 2, "activation": 2}
    assert q.get_layer("logits").quantization_bits() == {"weight": 8, "activation": None}
    assert not isinstance(q.get_layer("stage2_block1_conv1"), QuantizeWrapper)
    with pytest.raises(ValueError, match="rule key"):
        quantize_model(_resnet(), {"rules": [{"nmae": "x"}]})
    with pytest.raises(ValueError, match="scheme='int4'.*'int8_qat'"):
        quantize_model(_resnet(), "int4")


@pytest.mark.jax
def test_scheme_from_flags_and_builder():
    assert scheme_from_flags("pact", 4, 3)["input"] == "pact:3"
    assert scheme_from_flags("pact", 4, 3)["kernel"] == "dorefa:4"
    assert scheme_from_flags("lsq", 4, 32)["input"] is None
    with pytest.raises(ValueError, match="quant method='foo'"):
        scheme_from_flags("foo", 4, 4)
    with pytest.raises(ValueError, match="bits=2 for quantizer 'xnor'"):
        scheme_from_flags("xnor", 2, 1)
    model = build_model("qresnet14", num_classes=4, input_shape=(8, 8, 3),
                        quantize=scheme_from_flags("lsq", 2, 2))
    assert len(quantized_layers(model)) == 12
    assert model.quadkeras_config["quantize"]["kernel"] == "lsq:2"


def test_int8_qat_preset_lowers_to_tf_fakequant_ops():
    q = quantize_model(_resnet(), "int8_qat")
    assert len(quantized_layers(q)) == 22
    for layer in quantized_layers(q):
        assert layer.output_quantizer is not None and layer.input_quantizer is not None
    folded = quantize_model(_resnet(), "int8_qat_fold_bn")
    wrappers = [layer for layer in quantized_layers(folded) if isinstance(layer, QuantizeWrapper)]
    after_bn = [layer for layer in quantized_layers(folded) if isinstance(layer, QuantizeOutput)]
    assert len(wrappers) == 22 and len(after_bn) == 21  # every conv is followed by a BN
    assert all(isinstance(layer.layer, keras.layers.BatchNormalization) for layer in after_bn)
    for layer in wrappers:  # the output fake-quant moved past the BN, except on the logits
        assert layer.input_quantizer is not None
        assert (layer.output_quantizer is not None) == (layer.name == "logits"), layer.name
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TF FakeQuant ops exist on the TensorFlow backend only")
    import tensorflow as tf

    fn = tf.function(lambda x: q(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1, 8, 8, 3), tf.float32)).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("FakeQuantWithMinMaxVarsPerChannel") == 21  # conv kernels
    assert types.count("FakeQuantWithMinMaxVars") == 1 + 2 * 22  # dense kernel + inputs/outputs


def test_quantizers_own_their_parameters():
    from quadkeras.quantizers.base import is_quantizer_parameter

    q = quantize_model(_resnet(), scheme_from_flags("pact", 4, 4))
    params = [v for layer in quantized_layers(q) for quant in layer.quantizers() for v in quant.params.values()]
    assert sum(v.path.endswith("/input/alpha") for v in params) == 18
    found = [v for v in q.trainable_variables if is_quantizer_parameter(v)]
    assert [id(v) for v in found] == [id(v) for v in q.trainable_variables if any(v is p for p in params)]
    assert not any(is_quantizer_parameter(v) for v in _resnet().trainable_variables)


def test_wrapped_qresnet14_loss_drops():
    model = build_model("qresnet14", num_classes=4, input_shape=(8, 8, 3),
                        quantize=scheme_from_flags("lsq", 4, 4))
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    x = np.random.default_rng(3).random((32, 8, 8, 3)).astype("float32")
    y = np.arange(32) % 4
    initialize_quantizers(model, x)
    steps = [v for v in model.trainable_variables if v.path.endswith("/step")]
    before = [keras.ops.convert_to_numpy(v).copy() for v in steps]
    hist = model.fit(x, y, epochs=6, batch_size=32, verbose=0, shuffle=False)
    losses = hist.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
    assert len(steps) == 24  # weight + input step of the 12 quadratic block convs
    moved = [not np.allclose(b, keras.ops.convert_to_numpy(v)) for b, v in zip(before, steps)]
    assert sum(moved) >= len(steps) // 2, "LSQ steps should train with the model"


@pytest.mark.jax
def test_initialize_quantizers_sets_lsq_steps_from_data_and_keeps_bn_stats():
    inp = keras.Input((4, 4, 2))
    x = QuantizeWrapper(keras.layers.Conv2D(3, 3, name="conv"), "lsq:4", "lsq:4")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inp, keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(x)))
    data = np.random.default_rng(0).normal(size=(16, 4, 4, 2)).astype("float32") * 3.0
    wrapper = model.get_layer("conv")
    assert wrapper.input_quantizer.awaiting_data_init
    assert initialize_quantizers(model, data) == 1  # the kernel step was set at build time
    assert not wrapper.input_quantizer.awaiting_data_init
    (step,) = [float(keras.ops.convert_to_numpy(v)) for v in wrapper.input_quantizer.weights if v.name == "step"]
    # LSQ init: 2 * mean|x| / sqrt(Q_P), unsigned 4-bit activations: Q_P = 15
    assert step == pytest.approx(2 * np.abs(data).mean() / np.sqrt(15), rel=1e-5)
    bn = model.get_layer("bn")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), np.zeros(3))
    assert initialize_quantizers(model, data) == 0
