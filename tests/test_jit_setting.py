"""`jit_compile` of a training run: the resume rule (a value given on the resume wins, else the
run's recorded one), the torch-only `reduce_overhead` mode (CUDA graphs) and its refusal
elsewhere. Cheap: no test here compiles a step (the compiled fit with `reduce_overhead` is
`tests/test_training.py::test_jit_compile_trains_the_same_model`, torch only)."""

import json

import keras
import numpy as np
import pytest

from quadkeras.training import train
from tests.test_training import _Crash, tiny_config


class _Stopped(Exception):
    pass


class _StopAtFirstStep(keras.callbacks.Callback):
    """Records the model's `jit_compile` at the first train step and stops before it runs (no
    compile is paid)."""

    def __init__(self):
        super().__init__()
        self.jit_compile = None

    def on_train_batch_begin(self, batch, logs=None):
        self.jit_compile = self.model.jit_compile
        raise _Stopped


def _resume_jit(work_dir, **kw):
    stop = _StopAtFirstStep()
    with pytest.raises(_Stopped):
        train(tiny_config(work_dir, epochs=2, resume=True, **kw), callbacks=[stop])
    return stop.jit_compile


def _runtime(work_dir):
    return json.loads((work_dir / "state.json").read_text())["runtime"]


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="backend-independent code; on tensorflow Keras turns XLA off under op "
                           "determinism, which deterministic runs enable for the whole process")
def test_resume_takes_the_given_jit_compile_else_the_recorded_one(tmp_path, monkeypatch):
    """A resumed run used the jit_compile its last.keras was saved with, whatever the resume
    command said (and on torch without the static-shape settings). Now: given on the resume,
    it wins; not given, the run's own recorded setting (state.json `runtime`), not `auto`."""
    from quadkeras.training import jit

    monkeypatch.setattr(jit, "static_shape_torch_compile", lambda: None)  # no step is compiled
    work = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # one of two epochs done
        train(tiny_config(work, epochs=2, jit_compile="false"), callbacks=[_Crash(1)])
    assert _runtime(work) == {"jit_compile": "false"}
    assert _resume_jit(work, jit_compile="true") is True  # the file says False
    # a run started with --jit_compile=true (recorded), resumed without the flag: still true
    state = json.loads((work / "state.json").read_text())
    state["runtime"]["jit_compile"] = "true"
    (work / "state.json").write_text(json.dumps(state))
    assert _resume_jit(work) is True  # `auto` would be False on a CPU; the file says False
    state["runtime"] = {}  # a run saved before the record: `auto`
    (work / "state.json").write_text(json.dumps(state))
    assert _resume_jit(work) is _auto()


def _auto():
    """What `auto` compiles to here (torch: CUDA or not; tensorflow / jax: Keras' rule)."""
    from quadkeras.training.jit import resolve_jit_compile

    value = resolve_jit_compile("auto")
    return keras.Model()._resolve_auto_jit_compile() if value == "auto" else value


def test_a_new_run_uses_and_records_auto_when_not_given(tmp_path):
    stop = _StopAtFirstStep()
    with pytest.raises(_Stopped):
        train(tiny_config(tmp_path / "new", epochs=1), callbacks=[stop])
    assert stop.jit_compile is _auto()


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="reduce_overhead is torch's")
def test_reduce_overhead_is_refused_off_torch(tmp_path):
    with pytest.raises(ValueError, match=r"^Invalid jit_compile='reduce_overhead' on the "
                                         r"\w+ backend: CUDA graphs .* torch only"):
        train(tiny_config(tmp_path / "r", jit_compile="reduce_overhead"))
    assert not (tmp_path / "r").exists()  # refused before the work_dir is made


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.compile modes")
@pytest.mark.parametrize("setting, mode", [("true", None), ("reduce_overhead", "reduce-overhead")])
def test_torch_steps_are_compiled_with_the_settings_mode(monkeypatch, setting, mode):
    """`reduce_overhead` compiles the train, test and predict steps with
    `torch.compile(mode='reduce-overhead')`; `true` with torch's default (Keras' own call).
    torch.compile is recorded, not run."""
    import torch

    from quadkeras.training import jit

    calls = []

    def fake_compile(fn, **kw):
        calls.append(kw.get("mode"))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(jit, "static_shape_torch_compile", lambda: None)  # no global dynamo change
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile("sgd", "mse", jit_compile=True)
    jit.apply_jit_compile(model, setting)
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, validation_data=(x, y))
    model.predict(x, verbose=0)
    assert calls == [mode] * 3 and model.jit_compile is True
