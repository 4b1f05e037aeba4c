"""apps/bsq.py refuses flags it would not read (one line each), and evaluates at BSQ's batch 100.

One child process imports the app and checks every case with `check_flags` (what `main` runs
first), plus one real app run for the `error:` line and exit status.
"""

import json
import os
import subprocess
import sys

import keras
import pytest

torch = pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="app subprocesses: the contract is backend-independent")

CHILD = r'''
import json, sys
sys.path.insert(0, "apps")
import bsq
from absl import flags
out = {}
for name, argv in json.loads(sys.argv[1]).items():
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["bsq.py", *argv])
    try:
        bsq.check_flags()
        if name.startswith("bits_"):
            bsq._torch_model()
        out[name] = "ok"
    except ValueError as err:
        out[name] = str(err)
flags.FLAGS.unparse_flags()
flags.FLAGS(["bsq.py"])
out["eval_batch_size"] = flags.FLAGS.eval_batch_size
print(json.dumps(out))
'''


@TF_ONLY
def test_bsq_app_refuses_ignored_flags_and_evaluates_at_batch_100(tmp_path):
    from tests.test_torch_layouts import TINY, bsq_bit_state

    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    state, nbits = bsq_bit_state()
    bits = tmp_path / "bits.pth"
    torch.save({"state_dict": state, "Nbit_dict": nbits}, bits)
    w = f"--work_dir={tmp_path / 'w'}"
    cases = {
        "fp_keras": ["--mode=convert", "--model=m.keras", "--fp_epochs=3", w],
        "fp_torch": ["--mode=convert", "--from_torch=f.pth", "--model=resnet20", "--fp_epochs=3", w],
        "fp_train": ["--mode=train", "--model=m.keras", "--fp_lr=0.05", w],
        "fp_lr_alone": ["--mode=convert", "--model=resnet20", "--fp_lr=0.05", w],
        "dict_train": ["--mode=train", "--model=m.keras", "--dict=d.keras", w],
        "torch_eval": ["--mode=evaluate", "--model=m.keras", "--from_torch=f.pth", w],
        "torch_keras": ["--mode=convert", "--from_torch=f.pth", "--model=m.keras", w],
        "bits_dict": ["--mode=convert", f"--from_torch={bits}", f"--model={config}", "--dict=d.pth", w],
        "bits_shortcut": ["--mode=convert", f"--from_torch={bits}", f"--model={config}",
                          "--quant_shortcut=false", w],
        "ok_fp_run": ["--mode=convert", "--model=resnet20", "--fp_epochs=2", "--fp_lr=0.05", w],
        "ok_keras": ["--mode=convert", "--model=m.keras", w],
        "bits_ok": ["--mode=convert", f"--from_torch={bits}", f"--model={config}", "--abits=4", w],
    }
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    expect = {"fp_keras": "Invalid --fp_epochs=3: no FP training runs with a .keras --model",
              "fp_torch": "Invalid --fp_epochs=3: no FP training runs with --from_torch",
              "fp_train": "Invalid --fp_lr=0.05: no FP training runs with --mode=convert",
              "fp_lr_alone": "Invalid --fp_lr=0.05: no FP training runs without --fp_epochs > 0",
              "dict_train": "Invalid --dict='d.keras' with --mode=train: it is read only by --mode=convert",
              "torch_eval": "Invalid --from_torch='f.pth' with --mode=evaluate",
              "torch_keras": "Invalid --model='m.keras' with --from_torch",
              "bits_dict": "Invalid --dict='d.pth' with --from_torch=",
              "bits_shortcut": "Invalid --quant_shortcut=False with --from_torch="}
    for name, start in expect.items():
        assert got[name].startswith(start), (name, got[name])
        assert "\n" not in got[name]
    assert got["ok_fp_run"] == got["ok_keras"] == got["bits_ok"] == "ok"
    assert got["eval_batch_size"] == 100  # BSQ's --test-batch

    run = subprocess.run([sys.executable, os.path.join(REPO, "apps", "bsq.py"), "--mode=convert",
                          "--model=m.keras", "--fp_epochs=3", w], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("error: Invalid --fp_epochs=3")
    assert not (tmp_path / "w").exists()


@TF_ONLY
def test_bsq_app_search_then_finetune_run_end_to_end(tmp_path):
    """apps/bsq.py --mode=train (the search) and --mode=finetune on a tiny BSQ model: both engine
    runs go through the BSQ stage hooks and write the app's files (exit 0)."""
    from quadkeras.bsq import to_bsq
    from quadkeras.models import build_model
    from quadkeras.models.model_config import save_model
    from tests.test_torch_layouts import TINY

    model = to_bsq(build_model({**TINY, "input_shape": [16, 16, 1], "num_classes": 10}), bits=4, abits=4)
    save_model(model, tmp_path / "bin.keras")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    common = ["--dataset=digits", "--max_train=64", "--max_test=32", "--batch_size=32", "--epochs=1",
              "--augment=none", "--notensorboard"]
    steps = [("train", tmp_path / "bin.keras", "model_bin.keras"),
             ("finetune", tmp_path / "search" / "model_bin.keras", "best_float.keras")]
    for mode, source, made in steps:
        work = tmp_path / ("search" if mode == "train" else "ft")
        proc = subprocess.run([sys.executable, os.path.join(REPO, "apps", "bsq.py"), f"--mode={mode}",
                               f"--model={source}", f"--work_dir={work}", *common],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (work / made).exists() and "bsq" in json.loads((work / "summary.json").read_text())
