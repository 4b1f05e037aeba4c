"""BSQ app: convert / train / finetune / evaluate (mirrors BSQ's CIFAR scripts).

    # FP model -> 8-bit bit representation (BSQ's convert.py; --dict copies another scheme)
    python apps/bsq.py --flagfile=configs/resnet20_bsq_convert.cfg
    # BSQ training from the 8-bit model (cifar_prune_STE.py: --decay, --prun_int)
    python apps/bsq.py --flagfile=configs/resnet20_bsq.cfg
    # finetune with the scheme fixed; saves best_bin.keras and best_float.keras
    python apps/bsq.py --flagfile=configs/resnet20_bsq_finetune.cfg
    # accuracy, % of 1s per bit per layer, precision per layer, avg bits, compression (+JSON, PNG)
    python apps/bsq.py --mode=evaluate --model=runs/bsq/model_bin.keras --checkpoint=runs/bsq
"""

import os

import keras
from absl import flags

import _common

from quadkeras.bsq import (
    BSQCallback, bsq_layers, bsq_report, format_report, save_report, scheme_of, set_bsq_decay,
    to_bsq, to_float, to_representation)
from quadkeras.bsq.training import compile_sgd, load_splits, make_datasets, step_schedule
from quadkeras.models import build_model

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "train", ["convert", "train", "finetune", "evaluate"], "What to do.")
flags.DEFINE_string("model", "resnet20", ".keras model, or a zoo name / config to build and train FP.")
flags.DEFINE_string("dict", None, "convert: BSQ .keras model whose per-layer scheme to copy.")
flags.DEFINE_string("checkpoint", "runs/bsq", "Output folder.")
flags.DEFINE_string("dataset", "digits", "digits, cifar10 or cifar100.")
flags.DEFINE_string("data_dir", None, "Dataset directory (quadkeras.data.load_data).")
flags.DEFINE_integer("nbits", 8, "Starting precision (BSQ's --Nbits).")
flags.DEFINE_float("decay", 0.01, "Bit-level group Lasso strength alpha (BSQ's --decay).")
flags.DEFINE_integer("prun_int", 50, "Epochs between re-quantization / precision adjustment.")
flags.DEFINE_integer("epochs", 350, "Training epochs.")
flags.DEFINE_float("lr", 0.1, "Initial learning rate.")
flags.DEFINE_list("schedule", ["250"], "Epochs at which the LR is multiplied by --gamma.")
flags.DEFINE_float("gamma", 0.1, "LR step factor.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("wd", 1e-4, "Weight decay.")
flags.DEFINE_integer("batch_size", 128, "Batch size (even).")
flags.DEFINE_integer("fp_epochs", 0, "convert: train a freshly built FP model this many epochs first.")
flags.DEFINE_float("fp_lr", 0.1, "convert: LR of that FP training.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity.")


def _data():
    splits = load_splits(FLAGS.dataset, FLAGS.data_dir)
    train, test = make_datasets(splits, FLAGS.batch_size, seed=FLAGS.seed)
    return splits, train, test


def _load(path):
    if not path.endswith(".keras") or not os.path.exists(path):
        raise ValueError(f"Invalid --model={path!r}: expected an existing .keras file for this mode.")
    return keras.models.load_model(path)


def _out(name):
    os.makedirs(FLAGS.checkpoint, exist_ok=True)
    return os.path.join(FLAGS.checkpoint, name)


def _fit(model, train, test, callbacks=(), epochs=None, lr=None):
    lr = FLAGS.lr if lr is None else lr
    compile_sgd(model, lr, FLAGS.momentum, FLAGS.wd)
    schedule = step_schedule(lr, [int(s) for s in FLAGS.schedule], FLAGS.gamma)
    return model.fit(train, validation_data=test, epochs=epochs or FLAGS.epochs, verbose=FLAGS.verbose,
                     callbacks=[schedule, *callbacks])


def _report(model, test, prefix):
    report = bsq_report(model, test)
    print(format_report(report))
    save_report(report, _out(f"{prefix}_report.json"), _out(f"{prefix}_bits.png"))
    return report


def convert(splits, train, test):
    if FLAGS.model.endswith(".keras"):
        fp = _load(FLAGS.model)
    else:
        fp = build_model(FLAGS.model, num_classes=splits.num_classes, input_shape=splits.x_train.shape[1:])
        if FLAGS.fp_epochs:
            _fit(fp, train, test, epochs=FLAGS.fp_epochs, lr=FLAGS.fp_lr)
            fp.save(_out("model_fp.keras"))
    scheme = _load(FLAGS.dict) if FLAGS.dict else None
    model = to_bsq(fp, bits=FLAGS.nbits, scheme=scheme)
    model.save(_out("model_bin.keras"))
    _report(model, test, "convert")


def train_bsq(splits, train, test):
    model = _load(FLAGS.model)
    if not bsq_layers(model):
        model = to_bsq(model, bits=FLAGS.nbits)
    total = set_bsq_decay(model, FLAGS.decay)
    print(f"BSQ training: alpha={FLAGS.decay}, {total} quantized weights, prun_int={FLAGS.prun_int}")
    _fit(model, train, test, callbacks=[BSQCallback(FLAGS.prun_int, verbose=1)])
    model.save(_out("model_bin.keras"))
    _report(model, test, "train")


def finetune(splits, train, test):
    model = to_representation(_load(FLAGS.model), "float")  # scheme fixed
    print(f"Finetuning with the fixed scheme {scheme_of(model)}")
    best = _out("best_finetune.keras")
    keep = keras.callbacks.ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True)
    _fit(model, train, test, callbacks=[keep])
    model = to_representation(_load(best), "bits")
    model.save(_out("best_bin.keras"))
    to_float(model).save(_out("best_float.keras"))
    _report(model, test, "finetune")


def evaluate(splits, train, test):
    _report(_load(FLAGS.model), test, "evaluate")


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    modes = {"convert": convert, "train": train_bsq, "finetune": finetune, "evaluate": evaluate}
    modes[FLAGS.mode](*_data())


if __name__ == "__main__":
    _common.run(main)
