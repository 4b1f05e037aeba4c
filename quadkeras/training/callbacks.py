"""Keras callbacks for the training loop: LR logging, checkpoints, whole-run progress bar.

Example:

>>> import keras
>>> cbs = [LearningRateLogger(), keras.callbacks.CSVLogger("/tmp/h.csv")]  # lr lands in the CSV
"""

import math
import os

import keras

from quadkeras.models.model_config import identity
from quadkeras.training import checkpoint
from quadkeras.utils.errors import RunAborted


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `lr` (the LR used during the epoch) to the epoch logs; put it first in the list."""

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self._lr


class CheckpointSaver(keras.callbacks.Callback):
    """After each epoch: `best.keras` if `monitor` strictly improved, then `last.keras`, then
    `state.json` (epochs done, best metric, config and its hash, the model's identity, the
    `runtime` settings the epoch ran with, which a resume without them keeps) — all atomic.

    A model whose variables are not all finite (weights, BatchNorm moving statistics,
    quantizer state) never becomes `best.keras`. With `stop_on_nan` the `NonFiniteGuard`
    before this callback stops such an epoch first (the previous epoch's files stay the last
    good ones); without it (`--nostop_on_nan`) `last.keras` follows the run, as asked, with a
    warning.
    """

    def __init__(self, work_dir, config, monitor="val_acc", runtime=None):
        super().__init__()
        self.work_dir = work_dir
        self.config = config
        self.runtime = dict(runtime or {})  # settings a resume may change (jit_compile)
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        bad = checkpoint.nonfinite_variables(self.model)
        if bad:
            print(f"warning: epoch {epoch + 1}: non-finite variables {_listed(bad)}; last.keras "
                  "keeps them (--nostop_on_nan), best.keras is not replaced", flush=True)
        metric = (logs or {}).get(self.monitor)
        if metric is not None and not bad:
            checkpoint.save_best_if_better(self.model, self.work_dir, float(metric), epoch + 1,
                                           finite=True)
        checkpoint.save_model_atomic(self.model, os.path.join(self.work_dir, checkpoint.LAST))
        checkpoint.write_json(os.path.join(self.work_dir, checkpoint.STATE), {
            "epoch": epoch + 1, "best_metric": checkpoint.best_metric(self.work_dir),
            "best_epoch": _best_epoch(self.work_dir),
            "monitor": self.monitor, "config": self.config,
            "config_hash": checkpoint.config_hash(self.config),
            "model": identity(self.model), "runtime": self.runtime})


def _listed(names, limit=3):
    shown = ", ".join(names[:limit])
    return f"{shown} (+{len(names) - limit} more)" if len(names) > limit else shown


def _diverged_line(epoch, where, kept_epoch, work_dir):
    """The one-line message of `TrainingDiverged` (`epoch` 0-based; `kept_epoch` epochs done)."""
    kept = (f"the checkpoints of epoch {kept_epoch} in {work_dir!r} were kept"
            if kept_epoch and work_dir else "no checkpoint was written")
    return (f"training diverged at epoch {epoch + 1}{where}; {kept}. Lower --lr, check the data / "
            "init model for NaN/inf, or pass --nostop_on_nan to train on regardless.")


def _best_epoch(work_dir):
    meta = os.path.join(work_dir, checkpoint.BEST_META)
    return checkpoint.read_json(meta).get("epoch") if os.path.exists(meta) else None


class TrainingDiverged(RunAborted):
    """The loss (or a metric) became NaN/inf; the checkpoints of the last good epoch remain."""


class NonFiniteGuard(keras.callbacks.Callback):
    """Stop at the first non-finite training loss (per step), training epoch metric or model
    variable at the end of an epoch (a weight, or a BatchNorm moving statistic: those can
    overflow while the training loss, computed with batch statistics, stays finite).

    A non-finite validation metric only warns: it comes from the model in inference mode
    (e.g. an early quadratic network whose BN statistics have not settled overflows on some
    images), the weights are finite, and such a value never becomes the best checkpoint.

    Put it before `CheckpointSaver`: the epoch that diverged is never checkpointed, so
    `last.keras` / `best.keras` stay those of the last good epoch. Raises `TrainingDiverged`
    naming the epoch (1-based) and step and what survived.
    """

    def __init__(self, work_dir=None):
        super().__init__()
        self.work_dir = work_dir
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, where):
        bad = {k: v for k, v in (logs or {}).items()
               if isinstance(v, (int, float)) and not math.isfinite(v)}
        if not bad:
            return
        values = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise TrainingDiverged(_diverged_line(self._epoch, f"{where}: {values}", self._epoch,
                                              self.work_dir))

    def on_train_batch_end(self, batch, logs=None):
        self._check({k: v for k, v in (logs or {}).items() if k == "loss"}, f" step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._check({k: v for k, v in logs.items() if not k.startswith("val_")}, " (end-of-epoch metrics)")
        bad = checkpoint.nonfinite_variables(self.model) if self.model is not None else []
        if bad:
            raise TrainingDiverged(_diverged_line(self._epoch, f": non-finite variables {_listed(bad)}",
                                                  self._epoch, self.work_dir))
        bad_val = sorted(k for k, v in logs.items() if k.startswith("val_") and isinstance(v, (int, float))
                         and not math.isfinite(v))
        if bad_val:  # evaluation overflow (e.g. an early quadratic net in inference mode), not
            # diverged weights: training goes on; a non-finite metric never becomes the best
            print(f"warning: epoch {epoch + 1}: non-finite {', '.join(bad_val)} on the validation "
                  "data (inference-mode overflow on some images); training continues", flush=True)


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras progress bar that shows `Epoch e/total` although `fit` runs one epoch per call."""

    def __init__(self, total_epochs):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs
