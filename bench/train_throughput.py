"""One training epoch on CIFAR-10 (shared JPEG copy) per model: img/s under the current backend.

    KERAS_BACKEND=tensorflow python bench/train_throughput.py --models=qresnet14,resnet32
    KERAS_BACKEND=torch python bench/train_throughput.py --max_train=5120   # shorter epoch

Uses `quadkeras.training.train` with the seed recipe (batch 256, crop+flip) and prints the
summary's img/s (training only, excludes data decoding and evaluation set-up).
"""

import json
import os
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_list("models", ["qresnet14", "resnet32"], "Zoo models to time.")
flags.DEFINE_integer("max_train", 0, "Limit the epoch to N images (0 = all 50,000).")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_string("work_dir", None, "Keep each model's run in <work_dir>/<model> (default: a temp dir), "
                    "e.g. to export the one-epoch model afterwards.")
FLAGS = flags.FLAGS


def main(_):
    import keras

    from quadkeras.training import train

    for name in FLAGS.models:
        summary = train({"model": name, "dataset": "cifar10", "epochs": 1, "max_test": 512,
                         "batch_size": FLAGS.batch_size, "max_train": FLAGS.max_train,
                         "work_dir": os.path.join(FLAGS.work_dir, name) if FLAGS.work_dir else tempfile.mkdtemp(),
                         "tensorboard": False, "verbose": 0})
        print(json.dumps({"model": name, "backend": keras.backend.backend(),
                          "img_per_s": summary["img_per_s"], "train_time_s": summary["train_time_s"],
                          "test_acc_512": round(summary["test_acc"], 4)}), flush=True)


if __name__ == "__main__":
    app.run(main)
