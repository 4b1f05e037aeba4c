"""BatchNorm folding and the all-int8 QAT graph (`quadkeras.quantize.fold`, `.int8_graph`):
fold exactness against the unfolded model on every backend, `.keras` round trip of the int8
graph, fake-quant placement, and (TensorFlow) a LiteRT op census with every CONV/MUL/ADD int8."""

import keras
import numpy as np
import pytest

TF = keras.backend.backend() == "tensorflow"


def residual_quad_model():
    """Conv+BN+ReLU stem, a quadratic `ours` block with its block BN and a residual add, a
    depthwise conv + BN, a Dense + BN head: every foldable pattern, with random BN statistics."""
    from quadkeras.layers import QuadConv2D

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="stem")(inp)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = QuadConv2D(6, 3, padding="same", name="quad")(x)
    y = keras.layers.BatchNormalization(name="quad_bn")(y)
    y = keras.layers.Add(name="add")([x, y])
    y = keras.layers.ReLU(name="out")(y)
    y = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(y)
    y = keras.layers.BatchNormalization(name="dw_bn")(y)
    y = keras.layers.GlobalAveragePooling2D(name="pool")(y)
    y = keras.layers.Dense(4, name="fc")(y)
    model = keras.Model(inp, keras.layers.BatchNormalization(name="fc_bn")(y))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(-1.5, 1.5, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.2, 2.0, n)])
    quad = model.get_layer("quad")
    n = quad.branch_gamma.shape[0]
    quad.branch_moving_mean.assign(rng.normal(0, 0.3, n).astype("float32"))
    quad.branch_moving_variance.assign(rng.uniform(0.3, 2.0, n).astype("float32"))
    return model


def images(n=16, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 8, 8, 3)).astype("float32")


@pytest.mark.jax
def test_fold_batch_norms_is_exact_at_inference_and_leaves_the_model_alone():
    from quadkeras.quantize.fold import FoldedBatchNorm, fold_batch_norms

    model = residual_quad_model()
    before = [w.copy() for w in model.get_weights()]
    folded = fold_batch_norms(model)
    x = images()
    ref, out = model.predict(x, verbose=0), folded.predict(x, verbose=0)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    for name in ("stem_bn", "quad_bn", "dw_bn", "fc_bn"):
        assert isinstance(folded.get_layer(name), FoldedBatchNorm), name
    assert folded.get_layer("stem").use_bias and folded.get_layer("quad").neuron == "ours"
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.jax
def test_fold_into_ours_matches_numpy_formula():
    """s * (a * b + c) + t == (s a) * b + (s c + t): branch a and c BN parameters, NumPy check."""
    from quadkeras.quantize.fold import _fold_into_ours, bn_scale_shift

    model = residual_quad_model()
    quad, bn = model.get_layer("quad"), model.get_layer("quad_bn")
    weights = {v.name: keras.ops.convert_to_numpy(v) for v in quad.weights}
    s, t = bn_scale_shift(bn)
    folded = _fold_into_ours(quad, {k: v.copy() for k, v in weights.items()}, s, t)
    units = s.shape[0]
    g, b = weights["branch_gamma"], weights["branch_beta"]
    np.testing.assert_allclose(folded["branch_gamma"], np.concatenate([g[:units] * s, g[units:2 * units],
                                                                      g[2 * units:] * s]), rtol=1e-6)
    np.testing.assert_allclose(folded["branch_beta"], np.concatenate([b[:units] * s, b[units:2 * units],
                                                                     b[2 * units:] * s + t]), rtol=1e-6)


def test_int8_model_places_one_fake_quant_per_tensor_and_round_trips(tmp_path):
    from quadkeras.quantize.calibration import calibrate
    from quadkeras.quantize.int8_graph import int8_model

    q = int8_model(residual_quad_model())
    slots = {layer.name: sorted(qq.name for qq in layer.quantizers())
             for layer in q.layers if hasattr(layer, "quantizers")}
    assert slots["stem"] == ["input", "kernel"]          # output moved to the ReLU after it
    assert slots["stem_relu"] == ["output"] and slots["out"] == ["output"]
    assert slots["quad"] == ["branch", "kernel", "output", "product"]  # input: stem_relu's
    assert "add" not in slots                            # rounded once, after its ReLU
    assert slots["fc"] == ["input", "kernel", "output"]  # input: the pooled activations
    x = images(32)
    calibrate(q, x, method="minmax")
    path = str(tmp_path / "int8.keras")
    q.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), q.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not TF, reason="LiteRT export runs under the TensorFlow backend")
def test_int8_model_exports_every_conv_mul_and_add_in_int8(tmp_path):
    from quadkeras.export import export_model
    from quadkeras.export.parity import op_census
    from quadkeras.quantize.calibration import calibrate
    from quadkeras.quantize.int8_graph import int8_model, mul_add_census

    x = images(64)
    q = int8_model(residual_quad_model())
    calibrate(q, x, method="minmax")
    report = export_model(q, str(tmp_path), formats=("litert_qat",), eval_data=(x, np.zeros(64)),
                          latency_runs=2, verbose=False)["formats"]["litert_qat"]
    with open(tmp_path / "model_qat.tflite", "rb") as f:
        census = mul_add_census(op_census(f.read()))
    assert census["MUL"] == (1, 1) and census["ADD"] == (2, 2), census  # quadratic add + residual
    assert census["CONV_2D"] == (2, 2) and census["FULLY_CONNECTED"] == (1, 1), census
    assert census["DEPTHWISE_CONV_2D"] == (1, 1), census
    assert not [k for k in report["census"]["ops"] if "float32" in k and not k.startswith("QUANTIZE")], report
    assert report["top1_agreement"] >= 0.9


def test_int8_all_preset_is_the_int8_graph_and_needs_a_trained_model():
    from quadkeras.quantize import quantize_model
    from quadkeras.quantize.int8_graph import int8_model
    from quadkeras.quantize.model import quant_scheme
    from quadkeras.training.config import resolve_config
    from quadkeras.training.trainer import initial_model

    model = residual_quad_model()
    assert quant_scheme("int8_all", 4, 4) == "int8_all"
    by_preset = [type(layer).__name__ for layer in quantize_model(model, "int8_all").layers]
    assert by_preset == [type(layer).__name__ for layer in int8_model(model).layers]
    assert "FoldedBatchNorm" in by_preset
    with pytest.raises(ValueError, match="quant='int8_all' without init_from"):
        initial_model(resolve_config({"dataset": "digits", "quant": "int8_all"}), None)


def test_int8_preset_is_int8_all_for_a_trained_model_and_int8_qat_from_scratch():
    from quadkeras.quantize import quantize_model
    from quadkeras.training.config import resolve_config
    from quadkeras.training.config import model_config, quant_scheme

    model = residual_quad_model()
    names = [type(layer).__name__ for layer in quantize_model(model, "int8").layers]
    assert names == [type(layer).__name__ for layer in quantize_model(model, "int8_all").layers]
    assert quant_scheme(resolve_config({"quant": "int8", "init_from": "f.keras"})) == "int8_all"
    scratch = resolve_config({"dataset": "digits", "quant": "int8"})
    assert quant_scheme(scratch) == "int8_qat"  # no BN statistics to fold yet
    assert model_config(scratch, (16, 16, 1), 10)["quantize"] == "int8_qat"


@pytest.mark.skipif(not TF, reason="LiteRT export runs under the TensorFlow backend")
def test_calibrated_ptq_by_default_uses_the_int8_all_graph_int8_everywhere(tmp_path):
    from quadkeras.export import export_model
    from quadkeras.export.parity import op_census
    from quadkeras.quantize.int8_graph import mul_add_census

    x = images(64)
    report = export_model(residual_quad_model(), str(tmp_path), formats=("litert_int8",),
                          representative_data=x, eval_data=(x, np.zeros(64)), calibration="minmax",
                          calibration_samples=64, latency_runs=2,  # default ptq_graph: int8
                          verbose=False)["formats"]["litert_int8"]
    with open(tmp_path / "model_int8.tflite", "rb") as f:
        census = mul_add_census(op_census(f.read()))
    assert census["MUL"] == (1, 1) and census["ADD"] == (2, 2), census
    assert census["CONV_2D"] == (2, 2) and census["FULLY_CONNECTED"] == (1, 1), census
    assert report["top1_agreement"] >= 0.9
    with pytest.raises(ValueError, match="ptq_graph='all'"):
        export_model(residual_quad_model(), str(tmp_path / "x"), formats=("litert_int8",),
                     representative_data=x, calibration="minmax", ptq_graph="all")


def dead_gate_model():
    """`residual_quad_model` with one product-gate channel of `quad` dead (branch gamma_a =
    beta_a = 0, as `quadratize` starts it): that fused channel's inference BN scale is 0."""
    model = residual_quad_model()
    quad = model.get_layer("quad")
    dead = int(quad._branch_index[0][2])
    for var in (quad.branch_gamma, quad.branch_beta):
        value = keras.ops.convert_to_numpy(var).copy()
        value[dead] = 0.0
        var.assign(value)
    return model, dead


@pytest.mark.skipif(not TF, reason="LiteRT export runs under the TensorFlow backend")
@pytest.mark.parametrize("graph", ["int8", "int8_qat"])
def test_dead_product_gate_channel_exports_as_int8_conv_with_zero_output(graph, tmp_path):
    # Before the fix the converter stopped with "scale out of expressed type range" on the
    # quad conv (BN scale 0 folded into its per-channel kernel scale) and kept it in float32.
    import tensorflow as tf

    from quadkeras.export import export_model
    from quadkeras.export.parity import op_census
    from quadkeras.quantize.int8_graph import mul_add_census

    model, dead = dead_gate_model()
    x = images(32)
    report = export_model(model, str(tmp_path), formats=("litert_int8",), representative_data=x,
                          eval_data=(x, np.zeros(32)), calibration="minmax", calibration_samples=32,
                          latency_runs=1, ptq_graph=graph, verbose=False)["formats"]["litert_int8"]
    with open(tmp_path / "model_int8.tflite", "rb") as f:
        content = f.read()
    census = mul_add_census(op_census(content))
    assert census["CONV_2D"] == (2, 2) and census["MUL"][0] >= 1, census  # int8_qat: float BN MULs
    assert report["top1_agreement"] >= 0.9
    interpreter = tf.lite.Interpreter(model_content=content, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[:1])
    interpreter.invoke()
    fused = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8
             and len(t["shape"]) == 4 and t["shape"][-1 if t["shape"][0] == 1 else 0] == 18]
    kernels = [t for t in fused if t["shape"][0] == 18]
    outputs = [t for t in fused if t["shape"][0] == 1 and t["shape"][-1] == 18]
    assert len(kernels) == 1 and outputs, [t["name"] for t in fused]
    assert not interpreter.get_tensor(kernels[0]["index"])[dead].any()  # exact int8 zeros
    assert np.all(kernels[0]["quantization_parameters"]["scales"] > 0)
    out = outputs[0]
    zero_point = out["quantization_parameters"]["zero_points"][0]
    assert np.all(interpreter.get_tensor(out["index"])[..., dead] == zero_point)  # exactly 0.0


def test_live_dead_channels_is_the_same_function_and_restores_the_model():
    from quadkeras.export.dead_channels import dead_channels, live_dead_channels
    from quadkeras.quantize.calibration import calibrate
    from quadkeras.quantize.int8_graph import int8_model

    model, dead = dead_gate_model()
    q = int8_model(model)
    x = images(8)
    calibrate(q, x, method="minmax")
    quad = q.get_layer("quad")
    assert list(dead_channels(quad.layer)) == [dead]
    before = [keras.ops.convert_to_numpy(v).copy() for v in q.weights]
    expected = keras.ops.convert_to_numpy(q(x, training=False))
    with live_dead_channels(q):
        assert not dead_channels(quad.layer).size
        assert not keras.ops.convert_to_numpy(quad.layer.kernel)[..., dead].any()
        np.testing.assert_allclose(keras.ops.convert_to_numpy(q(x, training=False)), expected,
                                   rtol=1e-5, atol=1e-6)
    for v, value in zip(q.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), value)
