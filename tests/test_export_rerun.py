"""`quadkeras-export` started under torch / JAX re-runs itself under TensorFlow (issue #30)."""

import sys

import keras
import pytest

from quadkeras.export import loading

COMMAND = ["quadkeras-export", "--model=run/best.keras", "--formats=litert_int8"]


def _calls(monkeypatch, env=None):
    calls = []
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    loading.rerun_under_tensorflow("quadkeras.cli.export", COMMAND,
                                   execve=lambda *args: calls.append(args))
    return calls


def test_tensorflow_process_runs_the_export_itself(monkeypatch):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the tensorflow process's side of the contract")
    assert _calls(monkeypatch) == []


def test_other_backend_reruns_the_same_command_under_tensorflow(monkeypatch, capsys):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        pytest.skip("needs a process on another backend (torch / jax)")
    monkeypatch.delenv(loading.RERUN_MARK, raising=False)
    [(exe, argv, env)] = _calls(monkeypatch)
    assert exe == sys.executable
    assert argv == [sys.executable, "-m", "quadkeras.cli.export", *COMMAND[1:]]
    assert env["KERAS_BACKEND"] == "tensorflow" and env[loading.RERUN_MARK] == "1"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"KERAS_BACKEND={backend}; exporting under tensorflow" in err
    # a re-run that still is not on TensorFlow stops in one line instead of looping
    with pytest.raises(ValueError, match="after re-running under KERAS_BACKEND=tensorflow"):
        _calls(monkeypatch, {loading.RERUN_MARK: "1"})


def test_without_tensorflow_installed_one_line_names_the_install(monkeypatch):
    if keras.backend.backend() == "tensorflow":
        pytest.skip("needs a process on another backend (torch / jax)")
    monkeypatch.delenv(loading.RERUN_MARK, raising=False)
    monkeypatch.setattr(loading.importlib.util, "find_spec",
                        lambda name: None if name == "tensorflow" else object())
    with pytest.raises(ValueError, match=r"not installed \(pip install tensorflow-cpu\)"):
        _calls(monkeypatch)
