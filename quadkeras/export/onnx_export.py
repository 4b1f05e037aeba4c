"""ONNX export (float and QDQ int8) and its onnxruntime parity report.

- `onnx`: float graph from the Keras model, `model.export(format="onnx")` (tf2onnx under the
  TensorFlow backend).
- `onnx_int8` / `onnx_qat`: the LiteRT int8 (PTQ) / QAT int8 flatbuffer converted to ONNX with
  `tf2onnx.convert.from_tflite`: a QDQ graph (QuantizeLinear / DequantizeLinear around Conv,
  MatMul, Mul, Add; int8 per-channel weights, int32 bias) with the LiteRT file's int8 levels.
  tf2onnx cannot convert the fake-quant graph directly (no per-channel or narrow-range FakeQuant).

All files use opset `ONNX_OPSET`. Needs the optional packages of the `onnx` extra
(`pip install quadkeras[onnx]`: onnx, onnxruntime, tf2onnx).

Example (TensorFlow backend):

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
>>> path = keras_to_onnx(model, "/tmp/qk_doc.onnx")
>>> x = np.random.rand(8, 4).astype("float32")
>>> r = onnx_parity_report(path, model.predict(x, verbose=0), x, latency_runs=2)
>>> r["max_abs_diff"] < 1e-5, r["top1_agreement"], r["opset"]
(True, 1.0, 17)
"""

import os
import tempfile
import time

import numpy as np

from quadkeras.utils.progress import track

ONNX_OPSET = 17
ONNX_FORMATS = ("onnx", "onnx_int8", "onnx_qat")
WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
INT8_TYPES = (2, 3)  # onnx.TensorProto.UINT8, INT8
# what onnxruntime fuses a QDQ Conv / MatMul / Gemm into when it runs it in int8
ORT_INT8_WEIGHT_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                       "com.microsoft.QGemm", "com.microsoft.QLinearConv")


def require_onnx(fmt="onnx"):
    """Raise a one-line ValueError unless onnx, onnxruntime and tf2onnx import."""
    try:
        import onnx  # noqa: F401,PLC0415
        import onnxruntime  # noqa: F401,PLC0415
        import tf2onnx  # noqa: F401,PLC0415
    except ImportError as err:
        raise ValueError(f"Invalid format '{fmt}': the optional package {err.name} is missing; "
                         "install the extra with `pip install -e .[onnx]` (onnx, onnxruntime, "
                         f"tf2onnx) or drop '{fmt}' from formats.") from err


def keras_to_onnx(model, path, opset=ONNX_OPSET):
    """Float ONNX file of `model` (dynamic batch) via `model.export(format="onnx")`."""
    from quadkeras.export.convert import frozen_quantizers, has_fake_quant, input_signature  # noqa: PLC0415

    require_onnx()
    if has_fake_quant(model):
        raise ValueError("Invalid format 'onnx' for a fake-quant (QAT) model: tf2onnx cannot "
                         "convert per-channel fake-quant; export it as onnx_qat (QDQ int8).")
    with frozen_quantizers(model):
        model.export(path, format="onnx", input_signature=input_signature(model),
                     opset_version=opset, verbose=False)
    return path


def litert_to_onnx(content, path, opset=ONNX_OPSET):
    """QDQ ONNX file from LiteRT flatbuffer bytes (int8 ops become Q/DQ + float op)."""
    import tf2onnx  # noqa: PLC0415

    require_onnx()
    with tempfile.TemporaryDirectory() as tmp:
        tflite = os.path.join(tmp, "model.tflite")
        with open(tflite, "wb") as f:
            f.write(content)
        tf2onnx.convert.from_tflite(tflite, opset=opset, output_path=path)
    return path


def session(path, num_threads=1, optimized_path=None, s8s8=True):
    """An onnxruntime CPU session (`num_threads` intra-op threads; `s8s8`: see below)."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # LiteRT int8 activations are signed: onnxruntime on x86 fuses such (S8S8) QDQ ops into
    # QLinearConv / QLinearMatMul / QLinearMul / QLinearAdd only with this entry; without it the
    # QDQ graph runs as float ops between Q/DQ pairs. The parity run measures the int8 kernels
    # (on QResNet14 they give exactly LiteRT int8's outputs; docs/benchmarks.md for speed).
    if s8s8:
        options.add_session_config_entry("session.qdqisint8allowed", "1")
    if optimized_path:  # the graph onnxruntime runs, without hardware-specific layouts
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(path, x, batch_size=256, num_threads=1):
    """onnxruntime outputs (float32) for the float input batch `x`."""
    sess = session(path, num_threads)
    name = sess.get_inputs()[0].name
    x = np.asarray(x, "float32")
    return np.concatenate([sess.run(None, {name: x[i:i + batch_size]})[0] for i in
                           track(range(0, len(x), batch_size), label="onnxruntime parity",
                                 unit_name="batch")])


def onnx_census(path):
    """Ops of the ONNX file by type, and of the graph onnxruntime runs (`ort_ops`).

    A Conv / MatMul / Gemm counts as int8 (`weight_ops_int8`) when every input it multiplies
    comes from a DequantizeLinear of int8 data (a QDQ-quantized op); `int8_ops` counts
    QuantizeLinear / DequantizeLinear and QLinear* ops. `ort_weight_ops_int8` counts the
    conv/dense ops onnxruntime actually fused into int8 kernels (QLinearConv, ...): a QDQ
    graph that onnxruntime does not fuse runs as float ops between Q/DQ pairs.
    """
    import onnx  # noqa: PLC0415

    graph = onnx.load(path).graph
    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        session(path, optimized_path=optimized)
        ort_ops = _count(onnx.load(optimized).graph.node)
    dq_int8 = _int8_dequantized(graph)
    weight_ops, weight_int8, float_weight = 0, 0, []
    for node in graph.node:
        if node.op_type in WEIGHT_OPS:
            weight_ops += 1
            if all(name in dq_int8 for name in node.input[:2]):
                weight_int8 += 1
            else:
                float_weight.append(node.name)
    ops = _count(graph.node)
    quantized = sum(v for k, v in ops.items() if "Quantize" in k or k.startswith("QLinear"))
    return {"ops": ops, "total_ops": len(graph.node), "int8_ops": quantized,
            "weight_ops": weight_ops, "weight_ops_int8": weight_int8,
            "all_weight_ops_int8": weight_ops > 0 and weight_int8 == weight_ops,
            "float_weight_ops": float_weight, "ort_ops": ort_ops,
            "ort_weight_ops_int8": sum(ort_ops.get(k, 0) for k in ORT_INT8_WEIGHT_OPS)}


def _count(nodes):
    counts = {}
    for node in nodes:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _int8_dequantized(graph):
    """Names of DequantizeLinear outputs whose quantized input is (u)int8."""
    zero_points = {t.name: t.data_type for t in graph.initializer}
    return {node.output[0] for node in graph.node
            if node.op_type == "DequantizeLinear" and len(node.input) > 2
            and zero_points.get(node.input[2]) in INT8_TYPES}


def latency_ms(path, example, runs=50, warmup=5, num_threads=1, s8s8=True):
    """Median onnxruntime latency per image (batch 1), in milliseconds."""
    sess = session(path, num_threads, s8s8=s8s8)
    feed = {sess.get_inputs()[0].name: np.asarray(example, "float32")[None]}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def onnx_parity_report(path, reference, x, labels=None, latency_runs=50, num_threads=1):
    """Compare the ONNX file (run by onnxruntime) with Keras outputs `reference` on `x`.

    Same keys as `parity.parity_report` (max_abs_diff, top1_agreement, accuracy, size_bytes,
    latency_ms, census) plus `opset` and `runtime`.
    """
    from quadkeras.export.parity import agreement  # noqa: PLC0415

    got = run_onnx(path, x, num_threads=num_threads)
    return {**agreement(got, reference, labels), "opset": ONNX_OPSET,
            "runtime": f"onnxruntime {_ort_version()}", "size_bytes": os.path.getsize(path),
            "latency_ms": latency_ms(path, np.asarray(x[0]), latency_runs, num_threads=num_threads),
            "census": onnx_census(path)}


def _ort_version():
    import onnxruntime  # noqa: PLC0415

    return onnxruntime.__version__
