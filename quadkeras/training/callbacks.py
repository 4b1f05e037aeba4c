"""Keras callbacks for the training loop: LR logging, checkpoints, whole-run progress bar.

Example:

>>> import keras
>>> cbs = [LearningRateLogger(), keras.callbacks.CSVLogger("/tmp/h.csv")]  # lr lands in the CSV
"""

import os

import keras

from quadkeras.training import checkpoint


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `lr` (the LR used during the epoch) to the epoch logs; put it first in the list."""

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self._lr


class CheckpointSaver(keras.callbacks.Callback):
    """After each epoch: `best.keras` if `monitor` strictly improved, then `last.keras`, then
    `state.json` (epochs done, best metric, config and its hash) — all atomic."""

    def __init__(self, work_dir, config, monitor="val_acc"):
        super().__init__()
        self.work_dir = work_dir
        self.config = config
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        metric = (logs or {}).get(self.monitor)
        if metric is not None:
            checkpoint.save_best_if_better(self.model, self.work_dir, float(metric), epoch + 1)
        checkpoint.save_model_atomic(self.model, os.path.join(self.work_dir, checkpoint.LAST))
        checkpoint.write_json(os.path.join(self.work_dir, checkpoint.STATE), {
            "epoch": epoch + 1, "best_metric": checkpoint.best_metric(self.work_dir),
            "monitor": self.monitor, "config": self.config,
            "config_hash": checkpoint.config_hash(self.config)})


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras progress bar that shows `Epoch e/total` although `fit` runs one epoch per call."""

    def __init__(self, total_epochs):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs
