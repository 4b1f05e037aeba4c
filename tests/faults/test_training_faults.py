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


def test_nonfinite_validation_metric_warns_but_a_nonfinite_training_metric_stops(capsys):
    from quadkeras.training.callbacks import NonFiniteGuard, TrainingDiverged

    guard = NonFiniteGuard()
    guard.on_epoch_begin(2)
    guard.on_epoch_end(2, {"loss": 1.2, "acc": 0.3, "val_loss": float("nan"), "val_acc": 0.25})
    assert "non-finite val_loss" in capsys.readouterr().out
    with pytest.raises(TrainingDiverged, match="epoch 3"):
        guard.on_epoch_end(2, {"loss": float("inf"), "val_loss": 1.0})


def test_resume_refuses_a_foreign_last_keras_and_one_without_optimizer_state(tmp_path):
    """Another model's last.keras copied into a work_dir is not trained on under this run's
    config (summary.json would then describe the wrong model): one line naming the file and
    what differs; export refuses it the same way. Nor is a last.keras without optimizer state."""
    from quadkeras.models.model_config import load_model, save_model

    work = tmp_path / "run"
    _stopped_after_one_epoch(work)
    other = tmp_path / "other"
    train(_cfg(other, epochs=1, model={**tiny_config(other)["model"], "stem_filters": 8}))
    own = (work / "last.keras").read_bytes()
    (work / "last.keras").write_bytes((other / "last.keras").read_bytes())
    snapshot = _files(work)
    with pytest.raises(ValueError, match=r"^Invalid work_dir last='.*run/last.keras': not the expected "
                                         r"model \(config differs in \['stem_filters'\]") as err:
        train(_cfg(work, resume=True))
    assert "\n" not in str(err.value) and _files(work) == snapshot
    from quadkeras.export.loading import load_model as load_for_export  # export refuses it too

    with pytest.raises(ValueError, match=r"^Invalid model='.*run/last.keras': not the expected model"):
        load_for_export(str(work / "last.keras"))
    load_for_export(str(other / "last.keras"))  # in its own run it loads
    (work / "best.keras").write_bytes((other / "best.keras").read_bytes())
    (work / "last.keras").write_bytes(own)
    with pytest.raises(ValueError, match=r"^Invalid work_dir best='.*run/best.keras': not the expected"):
        train(_cfg(work, resume=True))
    os.remove(work / "best.keras")
    save_model(load_model(str(work / "last.keras"), compile=False), str(work / "last.keras"))
    with pytest.raises(ValueError, match=r"^Invalid work_dir last=.*holds no optimizer state.*--init_from"):
        train(_cfg(work, resume=True))


class _PoisonStatistics(keras.callbacks.Callback):
    """Sets the first BatchNorm's moving mean to NaN at the start of epoch `epoch` (0-based):
    the training loss (batch statistics) stays finite, inference gives NaN logits."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            bn = next(v for v in self.model.non_trainable_weights if "moving_mean" in v.path)
            bn.assign(np.full(bn.shape, np.nan, "float32"))


def test_non_finite_moving_statistics_never_become_last_good_or_best(tmp_path):
    work = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 2: non-finite variables .*moving_mean"
                                               r".*checkpoints of epoch 1"):
        train(_cfg(work), callbacks=[_PoisonStatistics(1)])
    assert json.loads((work / "state.json").read_text())["epoch"] == 1
    for name in ("last.keras", "best.keras"):
        weights = keras.models.load_model(work / name).get_weights()
        assert all(np.isfinite(w).all() for w in weights), name
    assert train(_cfg(work, resume=True))["epochs_run"] == 1  # the last good epoch resumes
    # --nostop_on_nan trains on, but a model with NaN statistics is never the best
    train(_cfg(tmp_path / "b", epochs=1, stop_on_nan=False), callbacks=[_PoisonStatistics(0)])
    assert not (tmp_path / "b" / "best.keras").exists()


def test_bad_flag_values_name_the_flag(tmp_path, monkeypatch):
    from quadkeras.training.distribute import is_primary_process, tf_config

    for kw, pattern in (({"max_train": -5}, r"^Invalid max_train=-5: expected an integer >= 0"),
                        ({"max_test": 2.5}, r"^Invalid max_test=2.5: expected an integer >= 0"),
                        ({"quant": "lsq", "wbits": -1}, r"^Invalid wbits=-1: expected an integer bit width"),
                        ({"quant": "lsq", "abits": 1}, r"^Invalid abits=1 for quant='lsq': expected 0 or "
                                                       r"32 \(float\) or one of 2, 3"),
                        ({"quant": "xnor", "wbits": 4}, r"^Invalid wbits=4 for quant='xnor'.*one of 1\.")):
        with pytest.raises(ValueError, match=pattern):
            train(_cfg(tmp_path / "x", **kw))
    assert not (tmp_path / "x").exists()
    for value, pattern in (("{not json", r"^Invalid TF_CONFIG='\{not json': not JSON"),
                           ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
                            r"task index 2 is out of range for the 2 'worker' address\(es\) \(expected 0..1\)"),
                           ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief"}}',
                            r"task type 'chief' is not in the cluster")):
        monkeypatch.setenv("TF_CONFIG", value)
        with pytest.raises(ValueError, match=pattern):
            tf_config()
        if keras.backend.backend() == "tensorflow":
            with pytest.raises(ValueError, match="Invalid TF_CONFIG"):
                is_primary_process()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}')
    assert tf_config()["task"]["index"] == 1


def test_custom_decay_list_matching_no_variable_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^Invalid custom_decay_list entries \['no_such_var'\]: they "
                                         r"match no trainable variable"):
        train(_cfg(tmp_path / "run", custom_decay_list="bias$,no_such_var,kernel", custom_decay=0.0))
    assert not (tmp_path / "run").exists()


def test_resume_compares_the_resolved_data_pipeline(tmp_path):
    """A run started with data_pipeline='auto' resumes with the pipeline auto chose given
    explicitly (and the other way round); another pipeline is refused."""
    from quadkeras.data.pipeline import resolve_pipeline
    from quadkeras.training.config import resolve_config
    from quadkeras.training.work_dir import open_run

    chosen = resolve_pipeline("auto")
    other = {"tf": "numpy", "numpy": "tf"}[chosen]
    for started, resumed in (("auto", chosen), (chosen, "auto")):
        work = tmp_path / started
        open_run(resolve_config(_cfg(work, data_pipeline=started))).close()
        open_run(resolve_config(_cfg(work, data_pipeline=resumed, resume=True))).close()
        with pytest.raises(ValueError, match=rf"differs in keys \['data_pipeline'\].*saved '{chosen}' vs "
                                             rf"now '{other}'"):
            open_run(resolve_config(_cfg(work, data_pipeline=other, resume=True)))


def test_rerun_on_a_crashed_work_dir_says_how_to_continue_or_start_over(tmp_path):
    from quadkeras.training.config import resolve_config
    from quadkeras.training.work_dir import open_run

    work = tmp_path / "run"
    open_run(resolve_config(_cfg(work))).close()  # a segfault in epoch 1 leaves the marker
    (work / "history.csv").write_text("epoch,loss\n")
    with pytest.raises(ValueError, match=r"already holds a run stopped before its first epoch finished "
                                         r"\(state.json, history.csv\); to continue it, pass --resume "
                                         r"with the same flags; to start over, remove the folder"):
        train(_cfg(work))
    state = json.loads((work / "state.json").read_text())
    (work / "state.json").write_text(json.dumps({**state, "epoch": 2}))  # last.keras lost
    with pytest.raises(ValueError, match=r"records 2 epochs but last.keras is missing"):
        train(_cfg(work, resume=True))


def test_ctrl_c_says_what_was_kept_and_how_to_continue(tmp_path):
    from quadkeras.utils.errors import RunInterrupted, interrupted_line

    with pytest.raises(RunInterrupted) as err:  # still a KeyboardInterrupt
        train(_cfg(tmp_path / "run"), callbacks=[_Crash(1)])
    line = interrupted_line(err.value)
    assert line.startswith("interrupted: training stopped by Ctrl-C after epoch 1 of 2; to continue, "
                           "run the same command with --resume"), line
    assert train(_cfg(tmp_path / "run", resume=True))["epochs_run"] == 1


def test_history_curves_are_written_atomically(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from quadkeras.report import plot_history

    path = tmp_path / "curves.png"
    plot_history({"epoch": [0, 1], "loss": [2.0, 1.0]}, str(path))
    before = path.read_bytes()

    def dies_half_way(self, target, **kw):
        with open(target, "wb") as f:
            f.write(before[:20])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    with pytest.raises(OSError):
        plot_history({"epoch": [0, 1, 2], "loss": [2.0, 1.0, 0.5]}, str(path))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["curves.png"]
