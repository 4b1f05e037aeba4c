"""bench/bsq_sweep.py refuses contradictory flags in one line before any work (subprocesses, once)."""

import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="script subprocesses: the contract is backend-independent")


@TF_ONLY
def test_sweep_refuses_contradictory_flags_in_one_line(tmp_path):
    cases = {  # flags -> the start of the one error line
        ("--from_torch=x.pth",): "error: Invalid --model=tiny with --from_torch",
        ("--from_torch=x.pth", "--model=resnet20", "--fp_epochs=3"): "error: Invalid --fp_epochs=3 with --from_torch",
        # --recipe=cpu fills --milestones (not given), which a constant schedule cannot take
        ("--recipe=cpu", "--model=resnet20", "--dataset=cifar10", "--schedule=constant"):
            "error: Invalid --milestones / --ft_milestones with --schedule=constant",
    }
    out = str(tmp_path / "out")
    procs = {flags: subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "bsq_sweep.py"), *flags,
                                      f"--out={out}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"})
             for flags in cases}
    for flags, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert proc.returncode == 1 and lines and lines[0].startswith(cases[flags]), (flags, err[-500:])
        assert "Traceback" not in err
    assert not os.path.exists(out)  # nothing written
