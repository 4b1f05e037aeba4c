"""Subprocess target of the kill -9 tests: trains `tiny_config(work_dir, epochs=3)` and stops
dead at a chosen point, touching `marker` so the parent can `kill -9` it right there.

    python tests/faults/kill_target.py mid_epoch|mid_write WORK_DIR MARKER

mid_epoch: after step 2 of epoch 2 (the work_dir lock is held meanwhile).
mid_write: inside epoch 2's first checkpoint write, with half of the `.tmp-*.keras` written.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402

from quadkeras.training import train  # noqa: E402
from tests.faults.test_kill_resume import kill_config  # noqa: E402


def _stop_here(marker):
    open(marker, "w").close()
    while True:
        time.sleep(1)


class PauseMidEpoch(keras.callbacks.Callback):
    def __init__(self, marker):
        super().__init__()
        self.marker, self.epoch = marker, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            _stop_here(self.marker)


def pause_mid_write(work_dir, marker):
    real_save = keras.Model.save

    def save(model, path, *args, **kwargs):
        real_save(model, path, *args, **kwargs)
        if os.path.exists(os.path.join(work_dir, "last.keras")):  # epoch 1 is checkpointed
            with open(path, "rb") as f:
                blob = f.read()
            with open(path, "wb") as f:
                f.write(blob[: len(blob) // 2])
            _stop_here(marker)

    keras.Model.save = save


if __name__ == "__main__":
    mode, work_dir, marker = sys.argv[1:4]
    callbacks = []
    if mode == "mid_epoch":
        callbacks.append(PauseMidEpoch(marker))
    else:
        pause_mid_write(work_dir, marker)
    train(kill_config(work_dir), callbacks=callbacks)
