"""ONNX export (float and QDQ int8) and its onnxruntime parity report.

- `onnx`: float graph from the Keras model, `model.export(format="onnx")` (tf2onnx under the
  TensorFlow backend).
- `onnx_int8` / `onnx_qat`: the LiteRT int8 (PTQ) / QAT int8 flatbuffer converted to ONNX with
  `tf2onnx.convert.from_tflite`: a QDQ graph (QuantizeLinear / DequantizeLinear around Conv,
  MatMul, Mul, Add; per-channel weights, int32 bias) with the LiteRT file's int8 levels,
  activations and weights stored as uint8 (U8U8: exact, `onnx_graph.unsigned_*`).
  tf2onnx cannot convert the fake-quant graph directly (no per-channel or narrow-range FakeQuant).
- `onnx_int4`: the float graph of a <= 4-bit model with its conv/dense weights packed as INT4
  + DequantizeLinear (opset 21, `onnx_graph.pack_int4_weights`).

The float and int8 files use opset `ONNX_OPSET`. Needs the optional packages of the `onnx`
extra (`pip install quadkeras[onnx]`: onnx, onnxruntime, tf2onnx).

Example (TensorFlow backend):

>>> import keras, numpy as np, os, tempfile
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
>>> path = keras_to_onnx(model, os.path.join(tempfile.mkdtemp(), "model.onnx"))
>>> x = np.random.rand(8, 4).astype("float32")
>>> r = onnx_parity_report(path, model.predict(x, verbose=0), x, latency_runs=2)
>>> r["max_abs_diff"] < 1e-5, r["top1_agreement"], r["opset"]
(True, 1.0, 17)
"""

import os
import tempfile
import time

import numpy as np

from quadkeras.export.convert import frozen_quantizers, has_fake_quant, input_signature
from quadkeras.export.onnx_graph import pack_int4_weights, unsigned_activations, unsigned_weights
from quadkeras.export.parity import agreement
from quadkeras.utils.progress import track

ONNX_OPSET = 17
ONNX_FORMATS = ("onnx", "onnx_int8", "onnx_qat", "onnx_int4")
WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
INT8_TYPES = (2, 3)  # onnx.TensorProto.UINT8, INT8
INT4_TYPES = (21, 22)  # onnx.TensorProto.UINT4, INT4
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
    require_onnx()
    if has_fake_quant(model):
        raise ValueError("Invalid format 'onnx' for a fake-quant (QAT) model: tf2onnx cannot "
                         "convert per-channel fake-quant; export it as onnx_qat (QDQ int8).")
    with frozen_quantizers(model):
        model.export(path, format="onnx", input_signature=input_signature(model),
                     opset_version=opset, verbose=False)
    return path


def keras_to_onnx_int4(model, path):
    """ONNX file of a <= 4-bit model with its weights packed as INT4 (opset 21).

    The float graph of `model` (`keras_to_onnx`: the traced quantizers are folded into
    constant, already-quantized kernels), then every conv/dense weight on a signed 4-bit grid
    per output channel stored as INT4 + DequantizeLinear (`onnx_graph.pack_int4_weights`);
    activation quantizers stay as the float ops they trace to. Raises a one-line ValueError
    if no weight is on such a grid (nothing to pack).
    """
    import onnx  # noqa: PLC0415


    keras_to_onnx(model, path)
    graph = onnx.load(path)
    if not pack_int4_weights(graph):
        raise ValueError("Invalid format 'onnx_int4' for this model: no conv/dense weight lies on a "
                         "signed 4-bit grid; it is for models with <= 4-bit weights (e.g. "
                         "--quant=lsq --wbits=4), use onnx_int8 / onnx_qat for 8-bit ones.")
    onnx.save(graph, path)
    return path


def litert_to_onnx(content, path, opset=ONNX_OPSET, unsigned=True):
    """QDQ ONNX file from LiteRT flatbuffer bytes (int8 ops become Q/DQ + float op).

    With `unsigned` (default) activations and conv/dense weights are stored as uint8 (zero
    points + 128: exact, `onnx_graph.unsigned_activations` / `unsigned_weights`), the U8U8
    form onnxruntime fuses into int8 kernels with default session options and computes
    without int16 saturation on any x86 CPU; `unsigned=False` keeps tf2onnx's int8 (S8S8)
    graph (fused on x86 only with `session.qdqisint8allowed`, ~3x slower here).
    """
    import onnx  # noqa: PLC0415
    import tf2onnx  # noqa: PLC0415


    require_onnx()
    with tempfile.TemporaryDirectory() as tmp:
        tflite = os.path.join(tmp, "model.tflite")
        with open(tflite, "wb") as f:
            f.write(content)
        model, _ = tf2onnx.convert.from_tflite(tflite, opset=opset)
    if unsigned:
        unsigned_activations(model)
        unsigned_weights(model)
    onnx.save(model, path)
    return path


def session(path, num_threads=1, optimized_path=None, s8s8=False):
    """An onnxruntime CPU session (`num_threads` intra-op threads), default options.

    Our QDQ files have uint8 activations and weights (U8U8), which onnxruntime fuses into QLinearConv /
    QGemm / QLinearAdd / QLinearMul with its default options, as a user's session would.
    `s8s8=True` adds `session.qdqisint8allowed`, the entry an int8-activation (S8S8) graph,
    e.g. `litert_to_onnx(..., unsigned=False)`, needs to be fused on x86 at all (its S8S8
    kernels were ~4x slower than U8S8 here: docs/export.md).
    """
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
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
    int4 = sum(t.data_type in INT4_TYPES for t in graph.initializer)
    return {"ops": ops, "total_ops": len(graph.node), "int8_ops": quantized,
            "weight_ops": weight_ops, "weight_ops_int8": weight_int8,
            "all_weight_ops_int8": weight_ops > 0 and weight_int8 == weight_ops,
            "float_weight_ops": float_weight, "int4_weights": int4, "ort_ops": ort_ops,
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


def latency_ms(path, example, runs=50, warmup=5, num_threads=1, s8s8=False):
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
    got = run_onnx(path, x, num_threads=num_threads)
    return {**agreement(got, reference, labels), "opset": file_opset(path),
            "runtime": f"onnxruntime {_ort_version()}", "size_bytes": os.path.getsize(path),
            "latency_ms": latency_ms(path, np.asarray(x[0]), latency_runs, num_threads=num_threads),
            "census": onnx_census(path)}


def file_opset(path):
    """The default-domain opset of an ONNX file."""
    import onnx  # noqa: PLC0415

    return next(o.version for o in onnx.load(path, load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx"))


def _ort_version():
    import onnxruntime  # noqa: PLC0415

    return onnxruntime.__version__
