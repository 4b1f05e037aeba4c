"""BSQ app: convert / train / finetune / evaluate (mirrors BSQ's CIFAR scripts).

    # FP model -> 8-bit bit representation (BSQ's convert.py; --dict copies another scheme)
    python apps/bsq.py --flagfile=configs/resnet20_bsq_convert.cfg
    # BSQ training from the 8-bit model (cifar_prune_STE.py: --decay, --prun_int)
    python apps/bsq.py --flagfile=configs/resnet20_bsq.cfg
    # finetune with the scheme fixed; saves best_bin.keras and best_float.keras
    python apps/bsq.py --flagfile=configs/resnet20_bsq_finetune.cfg
    # accuracy, % of 1s per bit per layer, precision per layer, avg bits, compression (+JSON, PNG)
    python apps/bsq.py --mode=evaluate --model=runs/bsq/model_bin.keras --work_dir=runs/bsq

Every .keras is written atomically (temp + rename). The search saves `search_last.keras`
after every epoch (the model after that epoch's re-quantization step) and finetune
`finetune_last.keras`, so a kill loses at most one epoch of a 350-epoch run (there is no
`--resume` yet: restart from that file with --model). A mode that would overwrite its input
(`--work_dir` = the input's folder) is refused before anything runs. Old spellings still
work as deprecated aliases: `--checkpoint` (= `--work_dir`), `--schedule` (= `--milestones`),
`--nbits` (= `--wbits`).
"""

import os

import keras
from absl import flags

import _common
from flag_table import define, define_aliases

from quadkeras.bsq import (
    BSQCallback, bsq_layers, bsq_report, format_report, save_report, scheme_of, set_bsq_decay,
    to_bsq, to_float, to_representation)
from quadkeras.bsq.training import compile_sgd, load_splits, make_datasets, step_schedule
from quadkeras.models import build_model
from quadkeras.models.model_config import load_model, save_model
from quadkeras.training.callbacks import AtomicModelSaver

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "train", ["convert", "train", "finetune", "evaluate"], "What to do.")
# BSQ's recipe (Yang et al.'s cifar_*.py) where it differs from the training defaults.
define(["model", "work_dir", "dataset", "data_dir", "wbits", "epochs", "lr", "milestones", "gamma",
        "momentum", "batch_size", "seed", "verbose"],
       model="resnet20", work_dir="runs/bsq", dataset="digits", wbits=8, epochs=350,
       milestones=["250"], batch_size=128, verbose=2)
define_aliases("nbits", checkpoint="work_dir", schedule="milestones")  # BSQ's own spellings
flags.DEFINE_string("dict", None, "convert: BSQ .keras model whose per-layer scheme to copy.")
flags.DEFINE_float("decay", 0.01, "Bit-level group Lasso strength alpha (BSQ's --decay).")
flags.DEFINE_integer("prun_int", 50, "Epochs between re-quantization / precision adjustment.")
flags.DEFINE_integer("abits", 0, "convert/train: activation bits of the block ReLUs (ReLU6 + per-batch "
                     "max-abs STE; PACT alpha=10 at <= 3 bits); 0 = float activations.")
flags.DEFINE_boolean("quantize_shortcuts", False, "convert/train: also bit-quantize (and count) the 1x1 "
                     "shortcut convs; BSQ keeps them float and out of the bit totals.")
flags.DEFINE_boolean("quantize_bias", False, "convert/train: bit-quantize and regularise the biases of the "
                     "quantized first-order layers (ResNet-20: the FC), as BSQ's --bin models.")
flags.DEFINE_boolean("precision_increase", True, "train: a layer whose re-quantized values overflow "
                     "its n bits gains one bit (n < 8, as BSQ's quant()); false: clip only.")
flags.DEFINE_float("wd", 1e-4, "Weight decay (keras.optimizers.SGD weight_decay).")
flags.DEFINE_integer("fp_epochs", 0, "convert: train a freshly built FP model this many epochs first.")
flags.DEFINE_float("fp_lr", 0.1, "convert: LR of that FP training.")


def _data():
    splits = load_splits(FLAGS.dataset, FLAGS.data_dir)
    train, test = make_datasets(splits, FLAGS.batch_size, seed=FLAGS.seed)
    return splits, train, test


# The files each mode writes into --work_dir (its inputs must not be among them).
OUTPUTS = {"convert": ("model_fp.keras", "model_bin.keras", "convert_report.json", "convert_bits.png"),
           "train": ("search_last.keras", "model_bin.keras", "train_report.json", "train_bits.png"),
           "finetune": ("finetune_last.keras", "best_finetune.keras", "best_bin.keras",
                        "best_float.keras", "finetune_report.json", "finetune_bits.png"),
           "evaluate": ("evaluate_report.json", "evaluate_bits.png")}


def _load(path, flag="--model"):
    if not path.endswith(".keras"):
        raise ValueError(f"Invalid {flag}={path!r}: expected a .keras file for --mode={FLAGS.mode}.")
    return load_model(path, flag)


def check_flags():
    """One-line errors before any work: negative --decay, an output that is an input."""
    if not 0 <= FLAGS.abits <= 8:
        raise ValueError(f"Invalid --abits={FLAGS.abits}: expected 0 (float activations) or 1..8.")
    if FLAGS.decay < 0:
        raise ValueError(f"Invalid --decay={FLAGS.decay}: expected a number >= 0 (BSQ's alpha).")
    outputs = {os.path.realpath(os.path.join(FLAGS.work_dir, name)): name
               for name in OUTPUTS[FLAGS.mode]}
    for flag, path in (("--model", FLAGS.model), ("--dict", FLAGS.dict)):
        if path and os.path.realpath(path) in outputs:
            raise ValueError(f"Invalid --work_dir={FLAGS.work_dir!r}: --mode={FLAGS.mode} would "
                             f"overwrite the input {flag}={path!r} ({outputs[os.path.realpath(path)]}); "
                             "choose another --work_dir.")


def _out(name):
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    return os.path.join(FLAGS.work_dir, name)


def _fit(model, train, test, callbacks=(), epochs=None, lr=None):
    lr = FLAGS.lr if lr is None else lr
    compile_sgd(model, lr, FLAGS.momentum, FLAGS.wd)
    schedule = step_schedule(lr, [int(s) for s in FLAGS.milestones], FLAGS.gamma)
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
            save_model(fp, _out("model_fp.keras"))
    scheme = _load(FLAGS.dict, "--dict") if FLAGS.dict else None
    model = to_bsq(fp, bits=FLAGS.wbits, scheme=scheme, abits=FLAGS.abits,
                   quantize_shortcuts=FLAGS.quantize_shortcuts,
                   quantize_bias=FLAGS.quantize_bias)
    save_model(model, _out("model_bin.keras"))
    _report(model, test, "convert")


def train_bsq(splits, train, test):
    model = _load(FLAGS.model)
    if not bsq_layers(model):
        model = to_bsq(model, bits=FLAGS.wbits, abits=FLAGS.abits,
                   quantize_shortcuts=FLAGS.quantize_shortcuts,
                   quantize_bias=FLAGS.quantize_bias)
    total = set_bsq_decay(model, FLAGS.decay)
    print(f"BSQ training: alpha={FLAGS.decay}, {total} quantized weights, prun_int={FLAGS.prun_int}")
    _fit(model, train, test, callbacks=[BSQCallback(FLAGS.prun_int, precision_increase=FLAGS.precision_increase,
                                                    verbose=1),
                                        AtomicModelSaver(_out("search_last.keras"))])
    save_model(model, _out("model_bin.keras"))
    _report(model, test, "train")


def finetune(splits, train, test):
    model = to_representation(_load(FLAGS.model), "float")  # scheme fixed
    print(f"Finetuning with the fixed scheme {scheme_of(model)}")
    best = _out("best_finetune.keras")
    keep = [AtomicModelSaver(best, monitor="val_accuracy"), AtomicModelSaver(_out("finetune_last.keras"))]
    _fit(model, train, test, callbacks=keep)
    model = to_representation(_load(best), "bits")
    save_model(model, _out("best_bin.keras"))
    save_model(to_float(model), _out("best_float.keras"))
    _report(model, test, "finetune")


def evaluate(splits, train, test):
    _report(_load(FLAGS.model), test, "evaluate")


def main(argv):
    del argv
    check_flags()
    keras.utils.set_random_seed(FLAGS.seed)
    modes = {"convert": convert, "train": train_bsq, "finetune": finetune, "evaluate": evaluate}
    modes[FLAGS.mode](*_data())


if __name__ == "__main__":
    _common.run(main)
