"""Export to SavedModel, LiteRT (float / dynamic-range / int8 PTQ / QAT int8) and ONNX, with a
parity report (max |dlogit|, top-1 agreement, size, op/dtype census, LiteRT latency).

TensorFlow backend only; `.keras` files trained under torch or JAX are re-loaded there:
`KERAS_BACKEND=tensorflow python apps/export.py --model=PATH --out_dir=DIR`.

Example:

>>> report = export_model("runs/digits/best.keras", "/tmp/export", eval_data="digits")  # doctest: +SKIP
>>> report["formats"]["litert_int8"]["top1_agreement"]  # doctest: +SKIP
0.99
"""

from quadkeras.export.api import DEFAULT_FORMATS, FORMATS, export_model
from quadkeras.export.loading import load_model, reload_under_tensorflow
from quadkeras.export.onnx_export import keras_to_onnx, keras_to_onnx_int4, litert_to_onnx, run_onnx
from quadkeras.export.parity import format_report, parity_report, run_litert

# What a user calls (docs/export.md); the converter steps, census helpers and constants
# (ONNX_OPSET, EXPORT_COMMAND, op_census, to_litert, ...) stay importable from their modules,
# and the data arrays from `quadkeras.data.prepare`.
__all__ = ["DEFAULT_FORMATS", "FORMATS", "export_model", "format_report", "keras_to_onnx",
           "keras_to_onnx_int4",
           "litert_to_onnx", "load_model", "parity_report", "reload_under_tensorflow",
           "run_litert", "run_onnx"]
