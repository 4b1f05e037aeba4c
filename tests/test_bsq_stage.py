"""BSQ stages on the training engine: exact resume mid-search, finetune, inputs untouched.

A tiny CIFAR-style ResNet on a 256-image digits subset, 4 search epochs with a
re-quantization every 2: a run killed after epoch 2 and resumed ends with the same weights,
scheme and history as the uninterrupted run (the re-quantization at epoch 2 happens after
the resume). Runs in each backend's process (a few tens of seconds).
"""

import hashlib
import os

import keras
import numpy as np
import pytest

from quadkeras.bsq import bsq_layers, scheme_of
from quadkeras.models import build_model
from quadkeras.models.model_config import load_model
from quadkeras.bsq import train_bsq
from quadkeras.training import train
from quadkeras.optimizers.sgd import CoupledDecaySGD

TINY = {"family": "resnet", "input_shape": [16, 16, 1], "num_classes": 10, "stem_filters": 4,
        "stages": [{"filters": 4, "blocks": 1, "stride": 1}, {"filters": 8, "blocks": 1, "stride": 2}]}


class Killed(Exception):
    pass


class KillAfter(keras.callbacks.Callback):
    """Raise after `epochs` epochs (after their checkpoint: extra callbacks run after it)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise Killed(f"killed after epoch {epoch + 1}")


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def fp_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = str(tmp_path_factory.mktemp("fp") / "fp.keras")
    build_model(TINY).save(path)
    return path


def _config(fp_path, work_dir, **overrides):
    return {"model": "tiny", "dataset": "digits", "max_train": 256, "max_test": 64, "batch_size": 64,
            "eval_batch_size": 64, "epochs": 4, "lr": 0.05, "schedule": "multistep", "milestones": [3],
            "wd": 1e-4, "grad_clip": 0.0, "augment": "none", "tensorboard": False, "verbose": 0,
            "deterministic": True, "bsq": "search", "init_from": fp_path, "wbits": 8, "abits": 4,
            "bsq_decay": 3.0, "bsq_prun_int": 2, "work_dir": str(work_dir), **overrides}


def _weights(path):
    return [keras.ops.convert_to_numpy(w) for w in load_model(path, "test").weights]


def _history(path):
    with open(path) as f:
        return [line.split(",") for line in f.read().split()]


def test_search_resumed_mid_run_equals_uninterrupted(fp_path, tmp_path):
    before = _digest(fp_path)
    full = train_bsq(_config(fp_path, tmp_path / "full"))
    with pytest.raises(Killed):
        train_bsq(_config(fp_path, tmp_path / "part"), callbacks=[KillAfter(2)])
    assert load_model(str(tmp_path / "part" / "last.keras"), "t").optimizer.iterations.numpy() == 8
    resumed = train_bsq(_config(fp_path, tmp_path / "part", resume=True))
    assert _digest(fp_path) == before  # the input model is never written
    assert resumed["bsq"]["scheme"] == full["bsq"]["scheme"]
    assert full["bsq"]["average_bits"] < 8.0, full["bsq"]  # the search removed bits
    assert resumed["test_acc"] == pytest.approx(full["test_acc"], abs=1e-6)
    a, b = _weights(str(tmp_path / "full" / "last.keras")), _weights(str(tmp_path / "part" / "last.keras"))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    ha, hb = _history(tmp_path / "full" / "history.csv"), _history(tmp_path / "part" / "history.csv")
    assert [r[0] for r in hb[1:]] == ["0", "1", "2", "3"] and ha[0] == hb[0] and "avg_bits" in ha[0]
    col = ha[0].index("avg_bits")
    assert [r[col] for r in ha[1:]] == [r[col] for r in hb[1:]]
    model = load_model(str(tmp_path / "full" / "last.keras"), "t")
    assert isinstance(model.optimizer, CoupledDecaySGD) and model.optimizer.l2 == pytest.approx(1e-4)
    planes = keras.ops.convert_to_numpy(bsq_layers(model)[0].kernel_quantizer.part_variable("pos_planes"))
    assert set(np.unique(planes)) <= {0.0, 1.0}  # re-quantized after the last epoch
    for name in ("state.json", "summary.json", "best.keras", "history.csv"):
        assert os.path.exists(tmp_path / "part" / name)


def test_finetune_stage_keeps_the_searched_scheme(fp_path, tmp_path):
    train_bsq(_config(fp_path, tmp_path / "search", epochs=2, bsq_prun_int=1))
    searched = str(tmp_path / "search" / "last.keras")
    before = _digest(searched)
    scheme = scheme_of(load_model(searched, "t"))
    summary = train_bsq(_config(searched, tmp_path / "ft", bsq="finetune", epochs=1, lr=0.01))
    assert _digest(searched) == before
    assert summary["bsq"]["stage"] == "finetune" and summary["bsq"]["scheme"] == scheme
    model = load_model(str(tmp_path / "ft" / "last.keras"), "t")
    assert {w.kernel_quantizer.representation for w in bsq_layers(model)} == {"float"} and scheme_of(model) == scheme


def test_bsq_stage_config_errors(fp_path, tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        train_bsq(_config(None, tmp_path / "a"))
    with pytest.raises(ValueError, match="quant="):
        train_bsq(_config(fp_path, tmp_path / "b", quant="lsq"))
    with pytest.raises(ValueError, match="bsq_prun_int"):
        train_bsq(_config(fp_path, tmp_path / "c", bsq_prun_int=0))
    with pytest.raises(ValueError, match="no BSQ layer"):
        train_bsq(_config(fp_path, tmp_path / "d", bsq="finetune"))
    assert not os.path.exists(tmp_path / "d" / "state.json")


def test_a_bsq_config_needs_the_bsq_stage(fp_path, tmp_path):
    """train() alone refuses a BSQ config in one line (the trainer imports nothing of BSQ)."""
    with pytest.raises(ValueError, match=r"^Invalid bsq='search' for this train\(\) call: .*BSQ_STAGE"):
        train(_config(fp_path, tmp_path / "x"))
    with pytest.raises(ValueError, match=r"^Invalid bsq='' for a BSQ stage"):
        train_bsq(_config(fp_path, tmp_path / "y", bsq=""))
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")
