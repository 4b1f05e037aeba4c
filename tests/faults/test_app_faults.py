"""Every app's contract on bad input: ONE line `error: ...` naming the flag or file, exit 1,
nothing written or overwritten. Real subprocesses (started in parallel), once, in the
TensorFlow process (the contract lives in quadkeras/cli/common.py and is backend-independent)."""

import os
import subprocess
import sys

import keras
import pytest

from quadkeras.utils import errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="app subprocesses: the contract is backend-independent")


def _start(app, *args):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, os.path.join(REPO, "apps", app), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_all(cases, width=4):
    """{name: (app, args)} -> {name: (returncode, last stderr line, stderr)}, `width` at a time."""
    results, names = {}, list(cases)
    for i in range(0, len(names), width):
        procs = {n: _start(*cases[n]) for n in names[i:i + width]}
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=300)
            lines = err.strip().splitlines()
            results[name] = (proc.returncode, lines[-1] if lines else "", err)
    return results


@pytest.fixture
def bad_inputs(tmp_path):
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp_path / "ok.keras")
    blob = (tmp_path / "ok.keras").read_bytes()
    (tmp_path / "trunc.keras").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "garbage.keras").write_bytes(b"not a zip")
    (tmp_path / "bad.yaml").write_text("family: resnet\nstages: [{filters: 4\n")
    (tmp_path / "binary.cfg").write_bytes(b"\xff\xfe\x00\x01--epochs=3")
    (tmp_path / "a_file").write_text("not a folder")
    os.makedirs(tmp_path / "bsq")
    (tmp_path / "bsq" / "model_bin.keras").write_bytes(blob)
    rgb = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    rgb.save(tmp_path / "rgb.keras")  # a CIFAR-shaped model, for --dataset=digits
    return tmp_path


@TF_ONLY
def test_every_app_gives_one_line_errors_and_writes_nothing(bad_inputs):
    t = bad_inputs
    digits = ["--dataset=digits", "--verbose=0", "--tensorboard=false"]
    cases = {
        "train_yaml": ("train.py", f"--model={t}/bad.yaml", f"--work_dir={t}/w/yaml", *digits),
        "train_flagfile": ("train.py", f"--flagfile={t}/binary.cfg", f"--work_dir={t}/w/flagfile"),
        "train_not_a_dir": ("train.py", f"--work_dir={t}/a_file/run", *digits),
        "quickstart_batch": ("quickstart.py", "--batch_size=100000", f"--work_dir={t}/w/qs"),
        "export_corrupt": ("export.py", f"--model={t}/trunc.keras", f"--out_dir={t}/w/ex1"),
        "export_no_formats": ("export.py", f"--model={t}/ok.keras", "--formats=", f"--out_dir={t}/w/ex2"),
        "export_dataset": ("export.py", f"--model={t}/rgb.keras", "--dataset=digits", f"--out_dir={t}/w/ex3"),
        "bsq_decay": ("bsq.py", "--decay=-0.5", f"--checkpoint={t}/w/bsq"),
        "bsq_overwrite": ("bsq.py", "--mode=train", f"--model={t}/bsq/model_bin.keras",
                          f"--checkpoint={t}/bsq"),
        "bsq_dict": ("bsq.py", "--mode=convert", f"--model={t}/ok.keras", f"--dict={t}/ok.keras",
                     f"--work_dir={t}/w/bsq_dict"),
        "auto_build_corrupt": ("auto_build.py", f"--model={t}/garbage.keras", "--dataset=digits"),
        "summary_yaml": ("summary.py", f"--model={t}/bad.yaml"),
    }
    expected = {
        "train_yaml": r"Invalid model='.*bad.yaml': corrupt or truncated model config file",
        "train_flagfile": r"Invalid flagfile=.*binary.cfg: not a text file",
        "train_not_a_dir": r"cannot use '.*a_file/run': Not a directory",
        "quickstart_batch": r"Invalid batch_size=100000: larger than the 1437 training examples",
        "export_corrupt": r"Invalid model='.*trunc.keras': corrupt or truncated .keras file",
        "export_no_formats": r"Invalid formats=\[\]: expected at least one of",
        "export_dataset": r"Invalid dataset='digits' for this model: the dataset's images are \(16, 16, 1\) "
                          r"with 10 classes, the model takes \(32, 32, 3\) inputs",
        "bsq_decay": r"Invalid --decay=-0.5: expected a number >= 0",
        "bsq_overwrite": r"Invalid --work_dir='.*bsq': --mode=train would overwrite the input --model",
        "bsq_dict": r"Invalid --dict='.*ok.keras': it holds no BSQ layers",
        "auto_build_corrupt": r"Invalid model='.*garbage.keras': corrupt or truncated .keras file",
        "summary_yaml": r"Invalid model='.*bad.yaml': corrupt or truncated model config file",
    }
    import re

    results = _run_all(cases)
    for name, pattern in expected.items():
        rc, last, err = results[name]
        assert rc == 1 and last.startswith("error: ") and re.search(pattern, last), (name, err[-2000:])
        assert "Traceback" not in err, (name, err[-2000:])
    assert not (t / "w").exists() or not [f for _, _, fs in os.walk(t / "w") for f in fs]
    assert (t / "bsq" / "model_bin.keras").read_bytes() == (t / "ok.keras").read_bytes()
    assert sorted(os.listdir(t / "bsq")) == ["model_bin.keras"]


def test_one_line_errors_wrapper_keeps_bugs_as_tracebacks():
    sys.path.insert(0, os.path.join(REPO, "apps"))
    import _common

    def raises(err):
        def main(argv):
            raise err
        return _common.one_line_errors(main)

    import errno

    with pytest.raises(SystemExit, match=r"^error: cannot write '/r/o/x': Read-only file system"):
        raises(OSError(errno.EROFS, "Read-only file system", "/r/o/x"))([])
    with pytest.raises(SystemExit, match=r"^error: training diverged"):
        raises(errors.RunAborted("training diverged at epoch 2\nmore"))([])
    with pytest.raises(KeyError):  # a bug keeps its traceback
        raises(KeyError("bug"))([])
    with pytest.raises(OSError):  # so does an unexpected OSError
        raises(OSError(errno.EBADF, "Bad file descriptor"))([])


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    sys.path.insert(0, os.path.join(REPO, "apps"))
    import _common

    def main(err):
        def run(argv):
            raise err
        return _common.one_line_errors(run)

    with pytest.raises(SystemExit) as stop:
        main(errors.RunInterrupted("training stopped by Ctrl-C after epoch 2 of 9; to continue, run "
                                   "the same command with --resume (work_dir='/r')."))([])
    assert stop.value.code == 130
    assert capsys.readouterr().err == ("interrupted: training stopped by Ctrl-C after epoch 2 of 9; to "
                                       "continue, run the same command with --resume (work_dir='/r').\n")
    with pytest.raises(SystemExit) as stop:
        main(KeyboardInterrupt())([])
    assert stop.value.code == 130 and capsys.readouterr().err.startswith("interrupted: stopped by Ctrl-C")


def test_flag_values_are_checked_by_the_flag_table():
    """--input_shape / --max_train / --wbits: a bad value is one absl error naming the flag
    (quadkeras.cli.common.parse_flags prints it as `error: flag --x=...: ...`)."""
    sys.path.insert(0, os.path.join(REPO, "apps"))
    from absl import flags

    from flag_table import define

    values = flags.FlagValues()
    define(["input_shape", "max_train", "max_test", "wbits", "abits"], flag_values=values)
    for arg, pattern in (("--input_shape=abc", r"flag --input_shape=abc: 'abc' is not H,W,C: expected "
                                               r"three positive integers"),
                         ("--input_shape=16,0,1", "is not H,W,C"),
                         ("--max_train=-5", r"flag --max_train=-5: -5 is not a non-negative integer"),
                         ("--wbits=-1", r"flag --wbits=-1: -1 is not an integer in the range \[0, 32\]"),
                         ("--abits=33", r"flag --abits=33")):
        with pytest.raises(flags.IllegalFlagValueError, match=pattern):
            values(["app", arg])
        values.unparse_flags()
    values(["app", "--input_shape=16,16,1"])
    assert values.input_shape == [16, 16, 1]
