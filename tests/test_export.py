"""Export tests: SavedModel/LiteRT float, dynamic, PTQ int8, QAT int8 with a QuadConv2D, parity
report, bad inputs, and a torch-saved .keras exported through a TensorFlow subprocess."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest

TF = keras.backend.backend() == "tensorflow"
needs_tf = pytest.mark.skipif(not TF, reason="LiteRT export runs under the TensorFlow backend")
ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "tf2onnx"))
needs_onnx = pytest.mark.skipif(not (TF and ONNX), reason="needs TensorFlow and the onnx extra")


def tiny_model():
    """Conv+BN, a QuadConv2D (`ours`, per-branch BN) and a Dense head for 16x16x1 digits."""
    from quadkeras.layers import QuadConv2D

    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = QuadConv2D(8, 3, strides=2, padding="same", name="quad2")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(x))


def fit(model, epochs):
    from quadkeras.data import load_data, make_dataset

    d = load_data("digits")
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(make_dataset(d.x_train, d.y_train, 64, True, d.mean, d.std), epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(float model, QAT model, QAT .keras path); the QAT model is fine-tuned from the float one."""
    if not TF:
        pytest.skip("LiteRT export runs under the TensorFlow backend")
    from quadkeras.quantize import quantize_model

    keras.utils.set_random_seed(0)
    model = fit(tiny_model(), epochs=4)
    float_weights = [w.copy() for w in model.get_weights()]
    qat = fit(quantize_model(model, "int8_qat"), epochs=2)
    path = str(tmp_path_factory.mktemp("qat") / "qat.keras")
    qat.save(path)
    model.set_weights(float_weights)  # quantize_model shares layers: restore the float weights
    return model, qat, path


@needs_tf
def test_float_dynamic_int8_parity(trained, tmp_path):
    from quadkeras.export import export_model

    report = export_model(trained[0], str(tmp_path), eval_data="digits", latency_runs=3, verbose=False)
    fmts = report["formats"]
    assert report["num_eval_images"] == 360
    assert fmts["litert_float"]["max_abs_diff"] <= 1e-4
    assert fmts["litert_float"]["top1_agreement"] == 1.0
    assert fmts["litert_float"]["keras_accuracy"] > 0.5  # the model learned something
    assert fmts["litert_dynamic"]["top1_agreement"] >= 0.97
    int8 = fmts["litert_int8"]
    assert int8["top1_agreement"] >= 0.97
    assert int8["census"]["all_weight_ops_int8"] and int8["census"]["weight_ops"] == 3
    assert fmts["litert_float"]["census"]["int8_ops"] == 0
    assert int8["size_bytes"] < fmts["litert_float"]["size_bytes"]
    assert int8["latency_ms"] > 0
    assert "skipped" in fmts["litert_qat"]  # a float model has no fake-quant
    assert os.path.isfile(os.path.join(tmp_path, "saved_model", "saved_model.pb"))
    with open(os.path.join(tmp_path, "parity_report.json")) as f:
        assert json.load(f)["formats"]["litert_int8"]["census"] == int8["census"]


@needs_tf
def test_qat_int8_every_conv_dense_int8(trained, tmp_path):
    from quadkeras.export import export_model

    report = export_model(trained[2], str(tmp_path), formats=("litert_qat",), eval_data="digits",
                          latency_runs=3, verbose=False)
    qat = report["formats"]["litert_qat"]
    assert qat["census"]["all_weight_ops_int8"], qat["census"]
    assert qat["census"]["weight_ops"] == 3  # conv1, the quadratic conv and the logits
    assert qat["top1_agreement"] >= 0.99  # 100 % measured: the branch fake-quant trains with it
    assert qat["keras_accuracy"] > 0.5
    ops = qat["census"]["ops"]  # the quadratic product and add run in int8 (product fake-quant)
    assert ops.get("MUL[int8]", 0) >= 1 and ops.get("ADD[int8]", 0) >= 1, ops


@needs_tf
def test_qat_fold_bn_preset_folds_the_batchnorm_into_the_int8_conv(trained, tmp_path):
    from quadkeras.export import export_model
    from quadkeras.quantize import quantize_model

    float_weights = [w.copy() for w in trained[0].get_weights()]
    folded = fit(quantize_model(trained[0], "int8_qat_fold_bn"), epochs=2)
    path = str(tmp_path / "fold.keras")
    folded.save(path)  # QuantizeOutput round-trips through .keras
    trained[0].set_weights(float_weights)
    fold = export_model(path, str(tmp_path / "fold"), formats=("litert_qat",), eval_data="digits",
                        latency_runs=1, verbose=False)["formats"]["litert_qat"]
    plain = export_model(trained[2], str(tmp_path / "plain"), formats=("litert_qat",),
                         eval_data="digits", latency_runs=1, verbose=False)["formats"]["litert_qat"]
    assert fold["census"]["all_weight_ops_int8"] and fold["top1_agreement"] >= 0.97
    float_mul = lambda r: r["census"]["ops"].get("MUL[float32]", 0)  # noqa: E731
    assert float_mul(fold) == float_mul(plain) - 1  # bn1's multiply is folded away
    assert fold["census"]["total_ops"] < plain["census"]["total_ops"]


@needs_tf
def test_qat_export_leaves_model_unchanged(trained, tmp_path):
    from quadkeras.data import load_data
    from quadkeras.data import dataset_arrays
    from quadkeras.export import export_model

    from quadkeras.export.quad_qat import quantized_quad_layers
    from quadkeras.quantize import quantize_model

    assert not quantized_quad_layers(trained[1])  # int8_qat trains the branch fake-quant itself
    # without a "branch" quantizer, export calibrates one on the fly (hooks, then restored)
    scheme = {"kernel": "fakequant:8", "input": "fakequant:8", "output": "fakequant:8",
              "quantize_first_last": True}
    qat = quantize_model(trained[0], scheme)
    assert [layer.name for layer in quantized_quad_layers(qat)] == ["quad2"]
    x, _ = dataset_arrays("digits", limit=64)
    before = np.asarray(qat.predict(x, verbose=0))
    report = export_model(qat, str(tmp_path), formats=("litert_qat",), representative_data="digits",
                          eval_data="digits", latency_runs=1, verbose=False)
    np.testing.assert_array_equal(before, np.asarray(qat.predict(x, verbose=0)))
    assert report["formats"]["litert_qat"]["census"]["all_weight_ops_int8"], report["formats"]["litert_qat"]
    assert load_data("digits").num_classes == 10


@needs_tf
def test_census_counts_hybrid_ops_as_float():
    import tensorflow as tf

    from quadkeras.export.parity import op_census

    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(32)])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    census = op_census(conv.convert())
    assert census["weight_ops"] == 2 and census["weight_ops_int8"] == 0
    assert not census["all_weight_ops_int8"]
    assert all("w=int8" in key for key in census["float_weight_ops"])


@needs_tf
def test_bad_inputs(tmp_path):
    from quadkeras.export import export_model

    with pytest.raises(ValueError, match="file not found"):
        export_model(str(tmp_path / "missing.keras"), str(tmp_path))
    with pytest.raises(ValueError, match="best.keras or last.keras|none of"):
        export_model(str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="format"):
        export_model(tiny_model(), str(tmp_path), formats=("litert_fp16",))
    report = export_model(tiny_model(), str(tmp_path), formats=("litert_int8",), verbose=False)
    assert "representative_data" in report["formats"]["litert_int8"]["skipped"]


@needs_tf
def test_non_finite_model_is_refused_before_anything_is_written(tmp_path):
    from quadkeras.export import export_model

    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.set_weights([np.full((256, 3), np.inf, "float32"), np.zeros(3, "float32")])
    with pytest.raises(ValueError, match=r"weight '.*kernel' holds 768 NaN/inf values"):
        export_model(model, str(tmp_path / "out"), formats=("litert_int8",), eval_data="digits",
                     verbose=False)
    assert os.listdir(tmp_path) == []


@needs_tf
def test_images_with_non_finite_logits_are_left_out_and_counted(tmp_path):
    from quadkeras.data import dataset_arrays
    from quadkeras.export import export_model

    x, y = dataset_arrays("digits", limit=60)
    x[[3, 10, 40]] = np.inf  # the Keras logits of these three are not finite
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    report = export_model(model, str(tmp_path), formats=("litert_int8",), eval_data=(x, y),
                          representative_data=x, verbose=False)
    assert report["non_finite_images_excluded"] == {"eval": 3, "calibration": 3}
    assert report["num_eval_images"] == 57
    assert report["formats"]["litert_int8"]["census"]["all_weight_ops_int8"]


@needs_tf
def test_unregistered_custom_object(tmp_path):
    from quadkeras.export import export_model

    class Doubler(keras.layers.Layer):  # deliberately not registered
        def call(self, x):
            return x * 2.0

    inp = keras.Input((4,))
    path = str(tmp_path / "custom.keras")
    keras.Model(inp, Doubler()(inp)).save(path)
    with pytest.raises(ValueError, match="register_keras_serializable"):
        export_model(path, str(tmp_path / "out"))


@pytest.mark.jax
@pytest.mark.skipif(TF, reason="checks the error raised under the torch / jax backends")
def test_non_tensorflow_backend_error():
    from quadkeras.export import export_model

    with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow python apps/export.py"):
        export_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), "/tmp/unused")


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="saves a .keras under torch")
def test_torch_saved_model_exports_via_tensorflow(tmp_path):
    """A .keras saved under torch is re-loaded and exported in a TF subprocess."""
    from quadkeras.export import reload_under_tensorflow

    path, out = str(tmp_path / "torch.keras"), str(tmp_path / "out")
    tiny_model().save(path)
    formats = ["litert_float"] + (["onnx"] if ONNX else [])
    report = reload_under_tensorflow(path, out, formats=formats, dataset="digits")
    assert report["formats"]["litert_float"]["max_abs_diff"] <= 1e-4
    assert report["num_eval_images"] == 360
    assert os.path.isfile(os.path.join(out, "model_float.tflite"))
    if ONNX:  # the torch-trained weights, run by onnxruntime
        assert report["formats"]["onnx"]["max_abs_diff"] <= 1e-4, report["formats"]["onnx"]


@needs_tf
def test_ptq_with_quadkeras_calibration_runs_the_quadratic_product_in_int8(trained, tmp_path):
    from quadkeras.export import export_model

    report = export_model(trained[0], str(tmp_path), formats=("litert_int8",), eval_data="digits",
                          latency_runs=3, verbose=False, calibration="mse")
    int8 = report["formats"]["litert_int8"]
    assert int8["census"]["all_weight_ops_int8"], int8
    assert int8["census"]["ops"].get("MUL[int8]", 0) >= 1 and int8["top1_agreement"] >= 0.97
    with pytest.raises(ValueError, match="calibration='kl'"):
        export_model(trained[0], str(tmp_path / "x"), formats=("litert_int8",), calibration="kl")


@needs_onnx
def test_onnx_float_and_ptq_qdq_run_in_onnxruntime(trained, tmp_path):
    from quadkeras.export import export_model

    report = export_model(trained[0], str(tmp_path), formats=("onnx", "onnx_int8"),
                          eval_data="digits", latency_runs=2, verbose=False)
    onnx_float, onnx_int8 = report["formats"]["onnx"], report["formats"]["onnx_int8"]
    assert onnx_float["max_abs_diff"] <= 1e-4 and onnx_float["top1_agreement"] == 1.0, onnx_float
    assert onnx_float["opset"] == 17 and onnx_float["census"]["int8_ops"] == 0
    assert onnx_float["census"]["ort_weight_ops_int8"] == 0
    assert onnx_float["census"]["weight_ops"] == 3  # conv1, the quadratic conv, the logits
    assert onnx_int8["census"]["all_weight_ops_int8"], onnx_int8["census"]
    assert onnx_int8["census"]["ort_weight_ops_int8"] == 3, onnx_int8["census"]["ort_ops"]  # fused
    assert onnx_int8["top1_agreement"] >= 0.97 and onnx_int8["latency_ms"] > 0
    assert os.path.isfile(tmp_path / "model.onnx") and os.path.isfile(tmp_path / "model_int8.onnx")
    assert not os.path.exists(tmp_path / "model_int8.tflite")  # only the formats asked for


@needs_onnx
def test_onnx_qat_is_the_litert_qat_file_as_qdq(trained, tmp_path):
    from quadkeras.export import export_model

    report = export_model(trained[2], str(tmp_path), formats=("litert_qat", "onnx_qat", "onnx"),
                          eval_data="digits", latency_runs=2, verbose=False)
    qat, litert = report["formats"]["onnx_qat"], report["formats"]["litert_qat"]
    assert qat["census"]["all_weight_ops_int8"] and qat["census"]["weight_ops"] == 3, qat["census"]
    assert qat["census"]["ops"]["QuantizeLinear"] >= 3
    ort_ops = qat["census"]["ort_ops"]  # onnxruntime runs conv, dense, quadratic MUL/ADD in int8
    assert qat["census"]["ort_weight_ops_int8"] == 3 and ort_ops.get("com.microsoft.QLinearMul", 0) >= 1, ort_ops
    assert qat["top1_agreement"] >= 0.99  # the same int8 levels as the LiteRT QAT file
    assert abs(qat["max_abs_diff"] - litert["max_abs_diff"]) <= 1e-3 * litert["max_abs_logit"]
    assert "onnx_qat" in report["formats"]["onnx"]["error"]  # fake-quant graph: use onnx_qat


@needs_tf
def test_export_app_quant_flag_takes_the_ptq_presets_and_the_old_spelling(tmp_path):
    """apps/export.py reads --quant (a PTQ preset) from the flag table; --ptq_graph aliases it."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def app(*args):
        proc = subprocess.run([sys.executable, os.path.join(repo, "apps", "export.py"), *args],
                              capture_output=True, text=True, cwd=repo, timeout=300,
                              env={**os.environ, "PYTHONPATH": repo, "TF_CPP_MIN_LOG_LEVEL": "3"})
        return proc.returncode, proc.stderr.strip().splitlines()[-1]

    missing = f"--model={tmp_path / 'none.keras'}"
    rc, last = app(missing, "--quant=lsq")
    assert rc == 1 and last == "error: Invalid quant='lsq': expected one of 'int8', 'int8_all', 'int8_qat'."
    rc, last = app(missing, "--ptq_graph=int8_all")  # parsed as --quant, fails on the model
    assert rc == 1 and last.startswith("error: ") and "none.keras" in last, last


@needs_tf
def test_dataset_that_does_not_fit_the_model_is_refused_in_one_line(tmp_path):
    from quadkeras.export import export_model

    rgb = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match=r"^Invalid dataset='digits' for this model: the dataset's images "
                                         r"are \(16, 16, 1\) with 10 classes, the model takes \(32, 32, 3\) "
                                         r"inputs and gives 10 classes; .*\(nothing was written\)\.$"):
        export_model(rgb, str(tmp_path / "a"), formats=("litert_float",), dataset="digits")
    three = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"^Invalid eval_data='digits' .* gives 3 classes"):
        export_model(three, str(tmp_path / "b"), formats=("litert_float",), eval_data="digits")
    with pytest.raises(ValueError, match=r"^Invalid eval_data: images of shape \(8, 8, 1\), but the "
                                         r"model takes \(16, 16, 1\) inputs"):
        export_model(three, str(tmp_path / "c"), eval_data=np.zeros((4, 8, 8, 1), "float32"))
    assert os.listdir(tmp_path) == []


@needs_tf
def test_exported_bsq_model_output_does_not_depend_on_the_batch(tmp_path):
    """BSQ's per-batch activation scale stays in Keras (the reference); the exported file has
    the scale fixed at its calibration max, so an image's logits ignore its batch mates."""
    from quadkeras.bsq import BSQActivation, to_bsq
    from quadkeras.export import export_model
    from quadkeras.export.parity import run_litert

    inputs = keras.Input((6, 6, 2))
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs))
    x = keras.layers.ReLU(name="block")(keras.layers.Conv2D(4, 3, padding="same", name="conv")(x))
    bsq = to_bsq(keras.Model(inputs, keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(x))), abits=4)
    rng = np.random.RandomState(0)
    calibration, images = rng.rand(32, 6, 6, 2).astype("float32"), rng.rand(4, 6, 6, 2).astype("float32")
    report = export_model(bsq, str(tmp_path / "out"), formats=("litert_float",), eval_data=calibration,
                          representative_data=calibration, latency_runs=1, verbose=False)
    content = (tmp_path / "out" / "model_float.tflite").read_bytes()
    with_others = np.concatenate([images, 50 * rng.rand(12, 6, 6, 2).astype("float32")])
    alone = run_litert(content, images)
    np.testing.assert_allclose(alone, run_litert(content, with_others)[:4], atol=1e-6)
    assert report["formats"]["litert_float"]["max_abs_diff"] <= 1e-5  # vs the fixed-scale Keras copy
    assert set(report["bsq_activation_scales"]) == {"block"} and report["bsq_activation_scales"]["block"] > 0
    assert bsq.get_layer("block").scale is None  # the model itself keeps the reference behaviour
    keras_alone = keras.ops.convert_to_numpy(bsq(images))  # the reference: it does depend
    assert np.abs(keras_alone - keras.ops.convert_to_numpy(bsq(with_others))[:4]).max() > 1e-3
    assert isinstance(bsq.get_layer("block"), BSQActivation)
