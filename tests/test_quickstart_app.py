"""apps/quickstart.py (what `make run` runs) end to end, shortened: float training, int8 QAT
fine-tune, LiteRT float / PTQ int8 / QAT int8 export with parity, once, in the TensorFlow
process (`make run`'s default backend). Under torch or JAX the quickstart exports through a
TensorFlow subprocess: that branch is `test_quickstart_exports_through_a_tensorflow_subprocess`
(torch process); a torch-trained quantized model loading under TF with the same outputs is
tests/test_quantize.py::test_saved_under_torch_loads_under_tensorflow, training on torch
tests/test_train_app.py and tests/test_training.py."""

import glob
import json
import os
import subprocess
import sys

import keras
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the whole app runs once, in the tensorflow process")
def test_quickstart_trains_exports_and_reports_parity(tmp_path):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, os.path.join(REPO, "apps", "quickstart.py"), "--epochs=8",
                          "--qat_epochs=1", f"--work_dir={tmp_path}", "--verbose=0"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "quickstart summary" in out.stdout and f"backend={keras.backend.backend()}" in out.stdout
    (run_dir,) = glob.glob(str(tmp_path / "*"))
    with open(os.path.join(run_dir, "export", "parity_report.json")) as f:
        formats = json.load(f)["formats"]
    with open(os.path.join(run_dir, "export_qat", "parity_report.json")) as f:
        formats.update(json.load(f)["formats"])
    float_report = formats["litert_float"]  # float32 rounding scales with the logits
    assert float_report["max_abs_diff"] <= 1e-4 * max(1.0, float_report["max_abs_logit"]), float_report
    assert formats["litert_float"]["top1_agreement"] == 1.0
    # a short run: PTQ of a quadratic net is the touchier one (98.6% TF / 94.2% torch seen here);
    # the export targets proper (PTQ >= 97 %, QAT >= 99 %) are tests/test_export.py's
    for mode, floor in (("litert_int8", 0.90), ("litert_qat", 0.95)):
        census = formats[mode]["census"]
        assert census["weight_ops"] > 0 and census["weight_ops_int8"] == census["weight_ops"], mode
        assert formats[mode]["top1_agreement"] >= floor, (mode, formats[mode]["top1_agreement"])


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the non-TensorFlow export branch")
def test_quickstart_exports_through_a_tensorflow_subprocess(tmp_path):
    """Off TensorFlow the quickstart's `_export` runs `quadkeras.cli.export` under
    KERAS_BACKEND=tensorflow on the torch-saved file and reads its parity report."""
    from quadkeras.cli.quickstart import _export
    from tests.test_export import tiny_model

    path = str(tmp_path / "torch.keras")
    tiny_model().save(path)
    report = _export(path, str(tmp_path / "export"), ("litert_float",))
    float_report = report["formats"]["litert_float"]
    assert float_report["top1_agreement"] == 1.0 and float_report["max_abs_diff"] <= 1e-4, float_report
    assert os.path.isfile(tmp_path / "export" / "model_float.tflite")
