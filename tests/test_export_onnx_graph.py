"""ONNX graph rewrites (issue 30): uint8 (U8U8) QDQ graphs equal the int8 ones, packed INT4
weights equal their float grid; onnx_int4 of an LSQ W4A4 model and LiteRT's INT4 weights of a
4-bit fake-quant model match the Keras model."""

import importlib.util
import os

import keras
import numpy as np
import pytest

ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
needs_ort = pytest.mark.skipif(not ORT, reason="needs onnx and onnxruntime")
TF = keras.backend.backend() == "tensorflow"
needs_tf_onnx = pytest.mark.skipif(not (TF and ORT and importlib.util.find_spec("tf2onnx")),
                                   reason="export runs under TensorFlow with the onnx extra")


def qdq_conv_graph(seed=0):
    """x -> Q/DQ (int8, zp -20) -> Conv (int8 per-channel weights, int32 bias) -> Q/DQ (zp -128)
    -> Relu-free output: the shape of tf2onnx's LiteRT graphs, with levels that reach both ends."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    w[:, 0, 0, 0] = 127  # large weights against large activations: where int16 pairs overflow
    w_scale = rng.uniform(0.01, 0.02, 4).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(-20, np.int8), "xz"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_scale, "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
             numpy_helper.from_array(rng.integers(-500, 500, 4).astype(np.int32), "b"),
             numpy_helper.from_array((np.float32(0.05) * w_scale).astype(np.float32), "bsc"),
             numpy_helper.from_array(np.zeros(4, np.int32), "bz"),
             numpy_helper.from_array(np.array(0.3, np.float32), "ys"),
             numpy_helper.from_array(np.array(-128, np.int8), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "bsc", "bz"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x, s8s8=False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if s8s8:
        options.add_session_config_entry("session.qdqisint8allowed", "1")
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@needs_ort
def test_unsigned_qdq_graph_gives_the_int8_graphs_outputs_fused_in_int8():
    from onnx import TensorProto

    from quadkeras.export.onnx_graph import unsigned_activations, unsigned_weights

    model = qdq_conv_graph()
    x = np.random.default_rng(1).uniform(-1.0, 13.0, (1, 3, 8, 8)).astype(np.float32)
    reference = run(model, x, s8s8=True)  # the signed graph, fused S8S8: exact int32 sums
    assert unsigned_activations(model) == 2 and unsigned_weights(model) == 1
    inits = {t.name: t for t in model.graph.initializer}
    zero_points = [inits[n.input[2]].data_type for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] != "b"]
    assert zero_points == [TensorProto.UINT8] * 5  # both activations (Q + DQ) and the weight
    np.testing.assert_array_equal(run(model, x), reference)


@needs_ort
def test_unsigned_activations_refuses_an_int8_tensor_it_cannot_follow():
    from onnx import helper

    from quadkeras.export.onnx_graph import unsigned_activations

    model = qdq_conv_graph()
    model.graph.node.append(helper.make_node("Abs", ["cq"], ["odd"]))  # int8 into a math op
    with pytest.raises(ValueError, match="int8 activation 'cq' feeds Abs"):
        unsigned_activations(model)


@needs_ort
def test_int4_weights_pack_exactly_and_off_grid_weights_stay_float():
    from onnx import TensorProto, helper, numpy_helper

    from quadkeras.export.onnx_graph import int4_grid, pack_int4_weights

    rng = np.random.default_rng(0)
    levels = rng.integers(-8, 8, (16, 8, 3, 3))
    steps = rng.uniform(0.01, 0.1, 16).astype(np.float32)
    w = (levels * steps[:, None, None, None]).astype(np.float32)
    q, s = int4_grid(w, axis=0)
    np.testing.assert_allclose(q * s[:, None, None, None], w, rtol=1e-6)
    assert int4_grid(w + 1e-3, axis=0) is None and int4_grid(w * 1.5 + 0.001, axis=0) is None
    off = rng.normal(size=(4, 16, 1, 1)).astype(np.float32)  # a float 1x1 conv after it
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["h", "off"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(off, "off")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(1, 8, 6, 6)).astype(np.float32)
    reference, size = run(model, x), len(model.SerializeToString())
    assert pack_int4_weights(model) == 1  # `off` is not on a 4-bit grid
    assert model.opset_import[0].version == 21
    assert [t.data_type for t in model.graph.initializer if t.name.endswith("__int4")] == [TensorProto.INT4]
    np.testing.assert_allclose(run(model, x), reference, rtol=1e-5, atol=1e-5)
    assert len(model.SerializeToString()) < size - w.size * 3  # 0.5 byte a weight, not 4


@needs_tf_onnx
def test_onnx_int4_of_an_lsq_w4a4_model_matches_keras_and_is_smaller(tmp_path):
    from quadkeras.export import export_model
    from quadkeras.quantize import quantize_model, scheme_from_flags
    from quadkeras.quantize.model import initialize_quantizers

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, name="c1")(inp)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.ReLU()(keras.layers.Conv2D(32, 3, name="c2")(x))
    x = keras.layers.Conv2D(32, 3, name="c3")(x)
    out = keras.layers.Dense(10, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    model = quantize_model(keras.Model(inp, out), scheme_from_flags("lsq", 4, 4))
    images = np.random.default_rng(0).uniform(0, 1, (40, 16, 16, 1)).astype("float32")
    initialize_quantizers(model, images)
    report = export_model(model, str(tmp_path), formats=("onnx", "onnx_int4"),
                          eval_data=images, latency_runs=2, verbose=False)
    dense, packed = report["formats"]["onnx"], report["formats"]["onnx_int4"]
    assert packed["census"]["int4_weights"] == 2 and packed["opset"] == 21, packed  # c2, c3
    assert packed["max_abs_diff"] <= 1e-4 * max(1.0, packed["max_abs_logit"]), packed
    assert packed["top1_agreement"] == 1.0
    assert packed["size_bytes"] < 0.6 * dense["size_bytes"], (packed["size_bytes"], dense["size_bytes"])
    float_model = keras.Model(inp, out)  # an 8-bit-or-float model has nothing to pack
    report = export_model(float_model, str(tmp_path / "f"), formats=("onnx_int4",),
                          eval_data=images, latency_runs=2, verbose=False)
    assert "no conv/dense weight lies on a signed 4-bit grid" in report["formats"]["onnx_int4"]["error"]


@needs_tf_onnx
def test_litert_writes_4_bit_fake_quant_weights_as_packed_int4(tmp_path):
    from quadkeras.export import export_model
    from quadkeras.quantize import quantize_model, scheme_from_flags
    from quadkeras.quantize.model import initialize_quantizers

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1))
    x = keras.layers.ReLU()(keras.layers.Conv2D(8, 3, name="c1")(inp))
    x = keras.layers.ReLU()(keras.layers.Conv2D(32, 3, name="c2")(x))
    x = keras.layers.ReLU()(keras.layers.Conv2D(32, 3, name="c3")(x))
    out = keras.layers.Dense(10, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    images = np.random.default_rng(0).uniform(0, 1, (40, 16, 16, 1)).astype("float32")
    sizes = {}
    for bits in (8, 4):
        model = quantize_model(keras.Model(inp, out), scheme_from_flags("fakequant", bits, 8))
        initialize_quantizers(model, images)
        report = export_model(model, str(tmp_path / str(bits)), formats=("litert_qat",),
                              eval_data=images, latency_runs=2, verbose=False)
        qat = report["formats"]["litert_qat"]
        assert qat["top1_agreement"] >= 0.95, qat  # (first conv and logits stay float)
        sizes[bits] = (qat["census"]["int4_tensors"], qat["size_bytes"])
    assert sizes[8][0] == 0 and sizes[4][0] == 2, sizes  # c2 and c3 (first/last stay 8-bit)
    assert sizes[4][1] < sizes[8][1] - 0.4 * 2 * 9 * 32 * 8, sizes
    assert os.path.isfile(tmp_path / "4" / "model_qat.tflite")
