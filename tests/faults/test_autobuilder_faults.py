"""The auto-builder app on bad flags: one line `error: ...` naming the flag, exit 1, before
any model or data is loaded. A real subprocess, once, in the TensorFlow process."""

import os
import subprocess
import sys

import keras
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="app subprocesses: the contract is backend-independent")


@TF_ONLY
def test_malformed_layer_regex_is_refused_at_flag_parsing(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    out_csv = tmp_path / "ri.csv"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "apps", "auto_build.py"),
                           "--model=qresnet14", "--dataset=digits", "--layer_regex=(",
                           f"--csv={out_csv}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("error: ") and "--layer_regex" in lines[-1], lines[-1]
    assert "missing )" in lines[-1], lines[-1]  # the regex error itself
    assert not out_csv.exists()
