"""Export to SavedModel, LiteRT (float / dynamic-range / int8 PTQ / QAT int8) and ONNX, with a
parity report (max |dlogit|, top-1 agreement, size, op/dtype census, LiteRT latency).

TensorFlow backend only; `.keras` files trained under torch or JAX are re-loaded there:
`KERAS_BACKEND=tensorflow python apps/export.py --model=PATH --out_dir=DIR`.

Example:

>>> report = export_model("runs/digits/best.keras", "/tmp/export", eval_data="digits")  # doctest: +SKIP
>>> report["formats"]["litert_int8"]["top1_agreement"]  # doctest: +SKIP
0.99
"""

from quadkeras.data.prepare import dataset_arrays  # noqa: F401 (moved; trimmed below next)
from quadkeras.export.api import DEFAULT_FORMATS, FORMATS, export_model
from quadkeras.export.convert import has_fake_quant, to_litert, write_saved_model
from quadkeras.export.loading import (EXPORT_COMMAND, load_model, reload_under_tensorflow,
                                      require_tensorflow, resolve_model_path)
from quadkeras.export.onnx_export import (ONNX_OPSET, keras_to_onnx, litert_to_onnx, onnx_census,
                                          onnx_parity_report, run_onnx)
from quadkeras.export.parity import format_report, op_census, parity_report, run_litert

__all__ = ["DEFAULT_FORMATS", "EXPORT_COMMAND", "FORMATS", "ONNX_OPSET", "dataset_arrays",
           "export_model", "format_report", "has_fake_quant", "keras_to_onnx", "litert_to_onnx",
           "load_model", "onnx_census", "onnx_parity_report", "op_census", "parity_report", "run_onnx",
           "reload_under_tensorflow", "require_tensorflow", "resolve_model_path", "run_litert",
           "to_litert", "write_saved_model"]
