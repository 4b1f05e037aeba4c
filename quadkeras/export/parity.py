"""Parity report for a LiteRT file: logits vs Keras, op/dtype census, size and latency.

Runs the flatbuffer with `ai_edge_litert.interpreter.Interpreter` (tf.lite.Interpreter is
deprecated).

Example:

>>> import keras, numpy as np, tempfile
>>> from quadkeras.export.convert import to_litert, write_saved_model
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
>>> content = to_litert(write_saved_model(model, tempfile.mkdtemp()), "float")
>>> x = np.random.rand(8, 4).astype("float32")
>>> r = parity_report(content, model.predict(x, verbose=0), x, latency_runs=2)
>>> r["max_abs_diff"] < 1e-4, r["top1_agreement"]
(True, 1.0)
"""

import time

import numpy as np

from quadkeras.utils.progress import track

# ops that carry the weights (the ones that must run int8 in an int8 export)
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")


def interpreter(content, num_threads=1):
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    return Interpreter(model_content=bytes(content), num_threads=num_threads)


def run_litert(content, x, batch_size=256, num_threads=1):
    """LiteRT outputs (float32) for the float input batch `x`."""
    x = np.asarray(x, "float32")
    interp = interpreter(content, num_threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs, current = [], None
    for start in track(range(0, len(x), batch_size), label="LiteRT parity", unit_name="batch"):
        chunk = x[start:start + batch_size]
        if current != len(chunk):
            interp.resize_tensor_input(inp["index"], chunk.shape)
            interp.allocate_tensors()
            current = len(chunk)
        interp.set_tensor(inp["index"], _to_input(chunk, inp))
        interp.invoke()
        outputs.append(_from_output(interp.get_tensor(out["index"]), out))
    return np.concatenate(outputs)


def _to_input(x, detail):
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _from_output(y, detail):
    if detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    return (y.astype("float32") - zero) * scale


def op_census(content):
    """Ops by type and dtype: {"ops": {"CONV_2D[int8]": n, ...}, "int8_ops", "total_ops",
    "weight_ops", "weight_ops_int8", "all_weight_ops_int8", "float_weight_ops"}.

    An op's dtype is its first input's; conv/dense ops count as int8 when that input is int8
    (a dynamic-range "hybrid" op has int8 weights but float activations and is not counted).
    """
    interp = interpreter(content)
    counts, weight_ops, weight_int8, float_weight = {}, 0, 0, []
    int8_ops = total = 0
    for op in interp._get_ops_details():
        name = op["op_name"]
        if name == "DELEGATE":  # XNNPACK's wrapper node, not a model op
            continue
        ins = [i for i in op["inputs"] if i >= 0]
        dtype = np.dtype(interp._get_tensor_details(ins[0], 0)["dtype"]).name if ins else "none"
        weight = (np.dtype(interp._get_tensor_details(ins[1], 0)["dtype"]).name
                  if name in WEIGHT_OPS and len(ins) > 1 else None)
        key = f"{name}[{dtype}" + (f",w={weight}]" if weight and weight != dtype else "]")
        counts[key] = counts.get(key, 0) + 1
        total += 1
        int8_ops += dtype == "int8"
        if name in WEIGHT_OPS:
            weight_ops += 1
            if dtype == "int8":
                weight_int8 += 1
            else:
                float_weight.append(key)
    return {"ops": dict(sorted(counts.items())), "total_ops": total, "int8_ops": int8_ops,
            "weight_ops": weight_ops, "weight_ops_int8": weight_int8,
            "all_weight_ops_int8": weight_ops > 0 and weight_int8 == weight_ops,
            "float_weight_ops": float_weight, "int4_tensors": int4_tensors(content)}


def int4_tensors(content):
    """How many tensors of the flatbuffer are stored as packed INT4 (the converter writes a
    weight whose fake-quant has `num_bits` <= 4 so; the interpreter reports them as int8)."""
    from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415

    model = schema.Model.GetRootAs(content, 0)
    return sum(sub.Tensors(i).Type() == schema.TensorType.INT4
               for sub in (model.Subgraphs(j) for j in range(model.SubgraphsLength()))
               for i in range(sub.TensorsLength()))


def latency_ms(content, example, runs=50, warmup=5, num_threads=1):
    """Median LiteRT latency per image (batch 1), in milliseconds."""
    interp = interpreter(content, num_threads)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], (1,) + tuple(example.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], _to_input(np.asarray(example, "float32")[None], inp))
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def parity_report(content, reference, x, labels=None, latency_runs=50, num_threads=1):
    """Compare LiteRT `content` with Keras outputs `reference` on inputs `x`.

    Returns {"max_abs_diff", "max_abs_logit" (Keras, the scale of the diff),
    "top1_agreement", "accuracy" (LiteRT, if labels), "keras_accuracy", "size_bytes",
    "latency_ms", "num_images", "census"}.
    """
    got = run_litert(content, x, num_threads=num_threads)
    return {**agreement(got, reference, labels), "size_bytes": len(content),
            "latency_ms": latency_ms(content, np.asarray(x[0]), runs=latency_runs, num_threads=num_threads),
            "census": op_census(content)}


def agreement(got, reference, labels=None):
    """num_images, max_abs_diff, max_abs_logit, top1_agreement of outputs `got` vs Keras'
    `reference`, and both accuracies if `labels` are given."""
    reference = np.asarray(reference, "float32")
    report = {
        "num_images": int(len(got)),
        "max_abs_diff": float(np.max(np.abs(got - reference))),
        "max_abs_logit": float(np.max(np.abs(reference))),
        "top1_agreement": float(np.mean(got.argmax(-1) == reference.argmax(-1))),
    }
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        report["accuracy"] = float(np.mean(got.argmax(-1) == labels))
        report["keras_accuracy"] = float(np.mean(reference.argmax(-1) == labels))
    return report


def format_report(name, report):
    """One readable block for a format's report."""
    if "error" in report:
        return f"{name:15s} FAILED: {report['error']}"
    if "skipped" in report:
        return f"{name:15s} skipped: {report['skipped']}"
    if "max_abs_diff" not in report:
        return f"{name:15s} {report.get('path', '')} ({report.get('size_bytes', 0) / 1024:.1f} KiB)"
    c = report["census"]
    acc = f" acc {report['accuracy']:.4f} (keras {report['keras_accuracy']:.4f})" if "accuracy" in report else ""
    lines = [f"{name:15s} max|dlogit| {report['max_abs_diff']:.3g}  top-1 agree "
             f"{100 * report['top1_agreement']:.2f}%{acc}  size {report['size_bytes'] / 1024:.1f} KiB  "
             f"latency {report['latency_ms']:.3f} ms/img"
             + (f"  opset {report['opset']} ({report['runtime']})" if "opset" in report else ""),
             f"{'':15s} ops {c['total_ops']} (int8 {c['int8_ops']}), conv/dense int8 "
             f"{c['weight_ops_int8']}/{c['weight_ops']}: "
             + ", ".join(f"{k} x{v}" for k, v in c["ops"].items())]
    if "ort_ops" in c:
        lines.append(f"{'':15s} onnxruntime runs conv/dense in int8: {c['ort_weight_ops_int8']}/"
                     f"{c['weight_ops']}: " + ", ".join(f"{k} x{v}" for k, v in c["ort_ops"].items()))
    return "\n".join(lines)
