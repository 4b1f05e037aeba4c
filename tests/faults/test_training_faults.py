"""Training faults in-process: NaN loss, full disk / read-only writes, corrupt run files,
foreign files in a work_dir, a second run on a locked work_dir, edge-case flags."""

import errno
import json
import os

import keras
import numpy as np
import pytest

from quadkeras.training import train
from quadkeras.training.callbacks import TrainingDiverged
from quadkeras.training.lock import RunLock
from quadkeras.utils.errors import RunAborted, user_error_line
from quadkeras.utils.safe_io import current_umask
from tests.test_training import _Crash, tiny_config


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _cfg(work_dir, **kw):
    return tiny_config(work_dir, **{"epochs": 2, "max_train": 96, "max_test": 32, **kw})


def _stopped_after_one_epoch(work_dir):
    """A 2-epoch run interrupted after epoch 1's checkpoints (resumable with `_cfg(...)`)."""
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(work_dir), callbacks=[_Crash(1)])


class _Poison(keras.callbacks.Callback):
    """Sets the first kernel to NaN at the start of epoch `epoch` (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = self.model.trainable_weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


@pytest.mark.jax
def test_nan_loss_stops_naming_epoch_and_keeps_last_good_checkpoint(tmp_path):
    work = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 2 step \d+: loss=nan.*checkpoints of epoch 1"):
        train(_cfg(work), callbacks=[_Poison(1)])
    assert json.loads((work / "state.json").read_text())["epoch"] == 1
    for name in ("last.keras", "best.keras"):
        weights = keras.models.load_model(work / name).get_weights()
        assert all(np.isfinite(w).all() for w in weights), name
    assert len((work / "history.csv").read_text().splitlines()) == 2  # header + epoch 1
    assert not (work / "summary.json").exists()
    assert user_error_line(RunAborted("x")) == "x"  # the apps print it as one line, exit 1
    resumed = train(_cfg(work, resume=True))  # the last good epoch resumes
    assert resumed["epochs_run"] == 1
    raw = (work / "history.csv").read_bytes()  # CSVLogger's \r\n kept across the trim
    assert len(raw.splitlines()) == 3 and raw.count(b"\r\n") in (0, 3)


def test_nan_data_stops_at_the_first_step_and_opt_out_trains_on(tmp_path, monkeypatch):
    from quadkeras.training import trainer

    real = trainer.load_data

    def nan_data(*args, **kw):
        data = real(*args, **kw)
        data.std = (0.0,)  # (x - mean) / 0: inf / NaN inputs
        return data

    monkeypatch.setattr(trainer, "load_data", nan_data)
    with pytest.raises(TrainingDiverged, match=r"epoch 1 step 1: loss=nan.*no checkpoint"):
        train(_cfg(tmp_path / "a"))
    assert not (tmp_path / "a" / "last.keras").exists()
    summary = train(_cfg(tmp_path / "b", epochs=1, stop_on_nan=False))
    assert summary["epochs_run"] == 1
    assert not (tmp_path / "b" / "best.keras").exists() or json.loads(
        (tmp_path / "b" / "best.json").read_text())["metric"] >= 0  # never a NaN best


def test_full_disk_at_a_checkpoint_overwrites_nothing(tmp_path, monkeypatch):
    code = errno.ENOSPC  # a read-only folder (EROFS) takes the same path
    work = tmp_path / "run"
    _stopped_after_one_epoch(work)
    before = _files(work)
    real_save = keras.Model.save

    def failing_save(self, path, *a, **kw):
        real_save(self, path, *a, **kw)  # a partial temp file exists when the disk fills up
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr(keras.Model, "save", failing_save)
    with pytest.raises(OSError) as err:
        train(_cfg(work, resume=True))
    line = user_error_line(err.value)
    assert line.startswith("cannot write ") and ".tmp-" in line and "nothing was overwritten" in line
    after = _files(work)
    for name in ("last.keras", "best.keras", "best.json", "state.json"):
        assert after[name] == before[name], name
    assert not [n for n in os.listdir(work) if n.startswith(".tmp-")]


def test_corrupt_run_files_are_named(tmp_path):
    work = tmp_path / "run"
    train(_cfg(work, epochs=1))
    state = (work / "state.json").read_bytes()
    (work / "state.json").write_bytes(state[: len(state) // 2])
    with pytest.raises(ValueError, match=r"Invalid work_dir file=.*state.json.*corrupt or truncated"):
        train(_cfg(work, epochs=1, resume=True))
    (work / "state.json").write_bytes(state)
    last = (work / "last.keras").read_bytes()
    (work / "last.keras").write_bytes(last[: len(last) // 3])
    with pytest.raises(ValueError, match=r"last.keras.*corrupt or truncated .keras file"):
        train(_cfg(work, epochs=1, resume=True))
    (tmp_path / "bad.keras").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"Invalid init_from=.*bad.keras.*not a zip"):
        train(_cfg(tmp_path / "b", init_from=str(tmp_path / "bad.keras")))
    (tmp_path / "bad.yaml").write_text("family: resnet\nstages: [unclosed\n")
    with pytest.raises(ValueError, match=r"Invalid model=.*bad.yaml.*corrupt or truncated model config"):
        train(_cfg(tmp_path / "c", model=str(tmp_path / "bad.yaml")))


def test_foreign_best_without_state_is_refused(tmp_path):
    work = tmp_path / "run"
    train(_cfg(work, epochs=1))
    os.remove(work / "state.json")  # e.g. killed between writes by an older version
    snapshot = _files(work)
    with pytest.raises(ValueError, match=r"already holds a run \(last.keras, best.keras, best.json"):
        train(_cfg(work))
    assert _files(work) == snapshot


def test_best_keras_without_its_best_json_is_re_measured(tmp_path):
    work = tmp_path / "run"
    _stopped_after_one_epoch(work)
    meta = json.loads((work / "best.json").read_text())
    # a kill between renaming a new best.keras into place and writing best.json:
    (work / "best.json").write_text(json.dumps({**meta, "metric": 0.999}))
    os.utime(work / "best.keras", ns=(1, 1))
    from quadkeras.training import checkpoint

    assert not checkpoint.best_is_consistent(str(work))
    train(_cfg(work, resume=True))
    assert checkpoint.best_is_consistent(str(work))
    assert json.loads((work / "best.json").read_text())["metric"] < 0.999


def test_second_run_on_a_locked_work_dir_fails_at_once(tmp_path):
    work = tmp_path / "run"
    with RunLock(work):  # another run holds it (a second process in test_kill_resume)
        with pytest.raises(RunAborted, match=r"in use by another run \(pid \d+\)"):
            train(_cfg(work))
        assert sorted(os.listdir(work)) == [".lock"]


def test_finished_run_resume_leaves_summary_and_files_as_they_were(tmp_path):
    work = tmp_path / "run"
    train(_cfg(work, epochs=1))
    (work / ".tmp-orphan.keras").write_bytes(b"left by a kill -9")
    snapshot = _files(work)
    again = train(_cfg(work, epochs=1, resume=True))
    assert again == json.loads(snapshot["summary.json"])
    after = _files(work)
    assert ".tmp-orphan.keras" not in after
    assert {k: v for k, v in after.items()} == {k: v for k, v in snapshot.items() if k != ".tmp-orphan.keras"}
    mode = os.stat(work / "last.keras").st_mode & 0o777
    assert mode == 0o666 & ~current_umask() and mode != 0o600


def test_flags_that_would_train_nothing_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Invalid batch_size=512: larger than the 96 training"):
        train(_cfg(tmp_path / "a", batch_size=512))
    with pytest.raises(ValueError, match=r"Invalid quant='lsq': it quantized no layer"):
        train(_cfg(tmp_path / "b", quant="lsq", wbits=32, abits=32))


def test_evaluate_only_on_a_read_only_run(tmp_path, monkeypatch):
    from quadkeras.training import checkpoint

    work = tmp_path / "run"
    train(_cfg(work, epochs=1))

    def read_only(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(checkpoint, "write_json", read_only)
    result = train(_cfg(work, evaluate_only=True))
    assert 0 <= result["test_acc"] <= 1 and not (work / "eval.json").exists()


def test_atomic_model_saver_every_epoch_and_only_on_improvement(tmp_path):
    from quadkeras.training.callbacks import AtomicModelSaver

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    every, best = AtomicModelSaver(str(tmp_path / "last.keras")), AtomicModelSaver(
        str(tmp_path / "best.keras"), monitor="val_accuracy")
    for cb in (every, best):
        cb.set_model(model)
    saved = []
    for epoch, acc in enumerate([0.5, 0.4, float("nan"), 0.6]):
        model.layers[0].bias.assign([float(epoch)])
        for cb in (every, best):
            cb.on_epoch_end(epoch, {"val_accuracy": acc})
        saved.append(float(keras.models.load_model(tmp_path / "best.keras").layers[0].bias[0]))
        assert float(keras.models.load_model(tmp_path / "last.keras").layers[0].bias[0]) == epoch
    assert saved == [0.0, 0.0, 0.0, 3.0]  # a worse or NaN epoch never replaces the best
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "last.keras"]


def test_nonfinite_validation_metric_warns_but_a_nonfinite_training_metric_stops(capsys):
    from quadkeras.training.callbacks import NonFiniteGuard, TrainingDiverged

    guard = NonFiniteGuard()
    guard.on_epoch_begin(2)
    guard.on_epoch_end(2, {"loss": 1.2, "acc": 0.3, "val_loss": float("nan"), "val_acc": 0.25})
    assert "non-finite val_loss" in capsys.readouterr().out
    with pytest.raises(TrainingDiverged, match="epoch 3"):
        guard.on_epoch_end(2, {"loss": float("inf"), "val_loss": 1.0})
