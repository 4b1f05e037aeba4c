"""One training epoch on CIFAR-10 (shared JPEG copy) per model: img/s under the current backend.

    KERAS_BACKEND=tensorflow python bench/train_throughput.py --models=qresnet14,resnet32
    KERAS_BACKEND=torch python bench/train_throughput.py --max_train=5120   # shorter epoch
    KERAS_BACKEND=torch python bench/train_throughput.py --models=qresnet14 --epochs=2 \
        --mixed_precision=bfloat16                                          # GPU: bf16 vs fp32

Uses `quadkeras.training.train` with the seed recipe (batch 256, crop+flip) and prints the
summary's img/s (training only, excludes data decoding and evaluation set-up), and with
`--epochs` > 1 each epoch's training img/s (the first includes tracing / compilation).
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_list("models", ["qresnet14", "resnet32"], "Zoo models to time.")
flags.DEFINE_integer("max_train", 0, "Limit the epoch to N images (0 = all 50,000).")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_integer("epochs", 1, "Epochs (img/s of each is printed; the first includes compilation).")
flags.DEFINE_enum("mixed_precision", "", ["", "float16", "bfloat16"], "Mixed precision policy.")
flags.DEFINE_string("work_dir", None, "Keep each model's run in <work_dir>/<model> (default: a temp dir), "
                    "e.g. to export the one-epoch model afterwards.")
FLAGS = flags.FLAGS


def epoch_timer(keras):
    class EpochTimer(keras.callbacks.Callback):
        """Seconds of each epoch's training steps (until evaluation starts)."""

        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.done = time.perf_counter(), False

        def on_test_begin(self, logs=None):
            if not self.done:
                self.seconds.append(time.perf_counter() - self.t0)
                self.done = True

    return EpochTimer()


def main(_):
    import keras

    from quadkeras.training import train

    for name in FLAGS.models:
        timer = epoch_timer(keras)
        summary = train({"model": name, "dataset": "cifar10", "epochs": FLAGS.epochs, "max_test": 512,
                         "batch_size": FLAGS.batch_size, "max_train": FLAGS.max_train,
                         "mixed_precision": FLAGS.mixed_precision,
                         "work_dir": os.path.join(FLAGS.work_dir, name) if FLAGS.work_dir else tempfile.mkdtemp(),
                         "tensorboard": False, "verbose": 0}, callbacks=[timer])
        images = summary["img_per_s"] * summary["train_time_s"] / max(summary["epochs_run"], 1)
        per_epoch = [round(images / s, 1) for s in timer.seconds]
        print(json.dumps({"model": name, "backend": keras.backend.backend(),
                          "mixed_precision": FLAGS.mixed_precision or "float32",
                          "batch_size": FLAGS.batch_size, "img_per_s": summary["img_per_s"],
                          "epoch_img_per_s": per_epoch, "train_time_s": summary["train_time_s"],
                          "test_acc_512": round(summary["test_acc"], 4)}), flush=True)


if __name__ == "__main__":
    app.run(main)
