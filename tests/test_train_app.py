"""apps/train.py end to end on digits (1 epoch, tiny model), once, in the tensorflow process.

The app's own code (flags, summary.json, history.csv, curves, --evaluate_only, the resume
check) is backend-independent; what it calls, `quadkeras.training.train` (training, resume,
`evaluate_only`), runs in process on every backend in tests/test_training.py."""

import json
import os
import subprocess
import sys

import keras
import pytest

from tests.backend_utils import assert_png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_YAML = """family: resnet
input_shape: [16, 16, 1]
num_classes: 10
stem_filters: 4
stages: [{filters: 4, blocks: 1, stride: 1}]
conv: {type: quad, neuron: ours, use_bias: false}
use_bias: false
"""


def _app(*args):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(REPO, "apps", "train.py"), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="app subprocesses run once, under tensorflow")
def test_train_app_end_to_end(tmp_path):
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY_YAML)
    work = tmp_path / "run"
    common = [f"--model={model}", "--dataset=digits", "--max_train=256", "--max_test=64",
              "--batch_size=32", "--augment=crop", f"--work_dir={work}", "--verbose=2"]
    out = _app(*common, "--epochs=1", "--lr=0.05", "--schedule=multistep", "--milestones=1",
               "--label_smoothing=0.1", "--decay_small")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"backend={keras.backend.backend()}" in out.stdout
    summary = json.loads((work / "summary.json").read_text())
    assert summary["backend"] == keras.backend.backend() and summary["epochs"] == 1
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["params_trainable"] > 0
    assert summary["macs"] > 0 and summary["img_per_s"] > 0 and summary["wall_time_s"] > 0
    header = (work / "history.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "loss", "acc", "val_acc", "lr"} <= set(header)
    assert {"last.keras", "best.keras", "state.json"} <= set(os.listdir(work))
    assert_png(work / "curves.png")  # loss / accuracy / LR curves from history.csv
    ev = _app(*common, "--evaluate_only")
    assert ev.returncode == 0 and "test_acc=" in ev.stdout, ev.stderr[-3000:]
    bad = _app(*common, "--epochs=1", "--lr=0.2", "--resume")
    assert bad.returncode != 0
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Cannot resume") and "'lr'" in last and "label_smoothing" in last
