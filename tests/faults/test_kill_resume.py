"""kill -9 of a real training process mid-epoch and mid-checkpoint-write, a second run on
the locked work_dir, then resume: the weights equal an uninterrupted run's.

(tests/test_training.py covers an in-process interrupt at an epoch boundary on every
backend; these start real processes (about a minute), so they are `slow`: they run in the
JAX process of `make test` (`-m "jax or slow"`), or anywhere with `-m slow`.)
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from quadkeras.training import train
from quadkeras.utils.errors import RunAborted
from tests.test_training import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _only_when_selected(request):  # module scope: runs before the `straight` fixture
    expr = request.config.getoption("markexpr") or ""
    if "slow" not in expr or "not slow" in expr:
        pytest.skip("real-process kill tests: select with -m slow (make test's JAX process does)")


def kill_config(work_dir, **kw):
    return tiny_config(work_dir, **{"epochs": 3, "max_train": 96, "max_test": 32, **kw})


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    work = tmp_path_factory.mktemp("straight")
    train(kill_config(str(work)))
    return [np.asarray(w) for w in keras.models.load_model(work / "last.keras").weights]


def _killed(mode, work, timeout=240):
    """Start kill_target.py, wait until it stops at `mode`, return the live process."""
    marker = work.parent / f"{mode}.reached"
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "faults", "kill_target.py"),
                             mode, str(work), str(marker)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"kill target exited early: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("kill target never reached its stop point")
        time.sleep(0.2)
    return proc


def _kill9(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _assert_resumes_to(work, straight):
    resumed = train(kill_config(str(work), resume=True))
    assert resumed["epochs_run"] == 2  # epoch 1 was checkpointed, epoch 2 is redone
    for a, b in zip(straight, keras.models.load_model(work / "last.keras").weights):
        np.testing.assert_allclose(a, np.asarray(b), atol=1e-5)
    assert not [n for n in os.listdir(work) if n.startswith(".tmp-")]
    raw = (work / "history.csv").read_bytes()
    assert len(raw.splitlines()) == 4 and raw.count(b"\r\n") in (0, 4)  # one line ending
    keras.models.load_model(work / "best.keras")


def test_kill_mid_epoch_second_run_refused_then_resume_is_exact(tmp_path, straight):
    work = tmp_path / "run"
    proc = _killed("mid_epoch", work)
    try:
        before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
        with pytest.raises(RunAborted, match=rf"in use by another run \(pid {proc.pid}\)"):
            train(kill_config(str(work), resume=True))
        with pytest.raises(RunAborted, match="in use by another run"):
            train(kill_config(str(work)))
        assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before
    finally:
        _kill9(proc)
    _assert_resumes_to(work, straight)


def test_kill_mid_checkpoint_write_then_resume_is_exact(tmp_path, straight):
    work = tmp_path / "run"
    _kill9(_killed("mid_write", work))
    assert [n for n in os.listdir(work) if n.startswith(".tmp-")]  # the half-written orphan
    _assert_resumes_to(work, straight)


TINY_YAML = """family: resnet
input_shape: [16, 16, 1]
num_classes: 10
stem_filters: 4
stages: [{filters: 4, blocks: 1, stride: 1}]
conv: {type: quad, neuron: ours, use_bias: false}
use_bias: false
"""


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_of_the_train_app_is_one_line_exit_130_and_resumable(tmp_path):
    """SIGINT (Ctrl-C) of apps/train.py after its first checkpoint: one line saying where it
    stopped and that --resume continues, exit 130, no traceback; the resume then finishes."""
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    work = tmp_path / "run"
    args = [sys.executable, os.path.join(REPO, "apps", "train.py"), f"--model={tmp_path / 'tiny.yaml'}",
            "--dataset=digits", "--max_train=64", "--max_test=32", "--batch_size=32", "--epochs=4",
            "--augment=none", f"--work_dir={work}", "--verbose=0", "--notensorboard", "--noplots"]
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    # a test runner started in the background (nohup, `cmd &` without job control) hands its
    # children SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the app
    # would never see the Ctrl-C. The child starts with SIGINT at its default, as in a terminal.
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_sigint_default)
    deadline = time.monotonic() + 240
    while not (work / "last.keras").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, f"finished before the Ctrl-C: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith("interrupted: training stopped by Ctrl-C after epoch ") and lines[-1].endswith(
        f"of 4; to continue, run the same command with --resume (work_dir='{work}')."), err[-3000:]
    assert not [n for n in os.listdir(work) if n.startswith(".tmp-")]
    # the app's config: its flags, DEFAULTS elsewhere (as apps/train.py builds it)
    summary = train(model=str(tmp_path / "tiny.yaml"), dataset="digits", max_train=64, max_test=32,
                    batch_size=32, epochs=4, augment="none", work_dir=str(work), verbose=0,
                    tensorboard=False, resume=True)
    assert summary["epochs"] == 4 and 0 < summary["epochs_run"] < 4
    assert summary == json.loads((work / "summary.json").read_text())
