"""Train a zoo / YAML model on digits, CIFAR-10 or CIFAR-100 (absl flags, flagfiles).

    KERAS_BACKEND=tensorflow python apps/train.py --flagfile=configs/quickstart.cfg
    python apps/train.py --flagfile=configs/qresnet14.cfg --work_dir=runs/q14 --resume

All logic lives in `quadkeras.training.train`; this file only maps flags to its config.
"""

from absl import app, flags

import _common  # noqa: F401 (puts the repo on sys.path)

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "qresnet14", "Zoo name or path to a model config (.yaml/.json).")
flags.DEFINE_enum("dataset", "cifar10", ["digits", "cifar10", "cifar100"], "Data set.")
flags.DEFINE_string("data_dir", None, "CIFAR .tar.gz, image folder or pickle folder.")
flags.DEFINE_string("cache_dir", None, "Decoded-data cache (default $QUADKERAS_CACHE or ~/.cache/quadkeras).")
flags.DEFINE_integer("max_train", 0, "Use a seeded random subset of N training examples (0 = all; smoke runs).")
flags.DEFINE_integer("max_test", 0, "Use a seeded random subset of N test examples (0 = all).")
flags.DEFINE_float("val_fraction", 0.0, "Hold out this seeded fraction of the training split (seed = "
                   "--seed) as validation data: best.keras and val_acc use it, the test split is "
                   "evaluated once at the end; 0 = validate on the test split (seed recipe).")
flags.DEFINE_integer("epochs", 200, "Training epochs.")
flags.DEFINE_integer("batch_size", 256, "Training batch size.")
flags.DEFINE_integer("eval_batch_size", 512, "Evaluation batch size.")
flags.DEFINE_float("lr", 0.1, "Base learning rate.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_boolean("nesterov", False, "Nesterov momentum.")
flags.DEFINE_enum("schedule", "cosine", ["cosine", "multistep", "constant"], "LR schedule (per epoch).")
flags.DEFINE_float("final_lr", 1e-4, "Cosine: LR reached at the last epoch.")
flags.DEFINE_list("milestones", [], "Multistep: epochs where the LR is multiplied by gamma.")
flags.DEFINE_float("gamma", 0.1, "Multistep: LR factor at each milestone.")
flags.DEFINE_float("warmup_epochs", 0, "Linear warmup length in epochs (per step).")
flags.DEFINE_float("wd", 5e-4, "Coupled L2 weight decay (PyTorch SGD style).")
flags.DEFINE_boolean("decay_small", False, "No decay on <=1-D params (BN, bias) and quantizer params.")
flags.DEFINE_string("custom_decay_list", "", "Comma-separated regexes of variable paths with custom decay.")
flags.DEFINE_float("custom_decay", None, "Decay for variables matched by --custom_decay_list.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_enum("augment", "crop_flip", ["none", "crop", "flip", "crop_flip"], "Augmentation preset.")
flags.DEFINE_float("mixup", 0.0, "MixUp alpha (keras.layers.MixUp); 0 = off.")
flags.DEFINE_float("cutmix", 0.0, "CutMix factor (keras.layers.CutMix); 0 = off.")
flags.DEFINE_float("grad_clip", 0.5, "Global gradient-norm clip; 0 = off.")
flags.DEFINE_enum("mixed_precision", "", ["", "float16", "bfloat16"], "Mixed precision compute dtype.")
flags.DEFINE_integer("seed", 0, "Random seed (init, data order, augmentation).")
flags.DEFINE_boolean("deterministic", False, "TensorFlow op determinism.")
flags.DEFINE_string("quant", "", "Quantization method ('' = float), e.g. lsq, dorefa, pact.")
flags.DEFINE_integer("wbits", 4, "Weight bits when --quant is set.")
flags.DEFINE_integer("abits", 4, "Activation bits when --quant is set.")
flags.DEFINE_boolean("quant_first_last", False, "Also quantize the first and last layers.")
flags.DEFINE_boolean("quant_shortcut", False, "Also quantize ResNet 1x1 shortcut convs.")
flags.DEFINE_string("init_from", None, "Start from this .keras model's weights (e.g. QAT from a float "
                    "checkpoint, quantized per --quant); --model is then ignored.")
flags.DEFINE_string("work_dir", "runs/default", "Checkpoints, logs and summary.json go here.")
flags.DEFINE_boolean("resume", False, "Continue the run in --work_dir exactly where it stopped.")
flags.DEFINE_boolean("evaluate_only", False, "Only evaluate --checkpoint (default work_dir/best.keras).")
flags.DEFINE_string("checkpoint", None, "Model file for --evaluate_only.")
flags.DEFINE_boolean("tensorboard", True, "Write TensorBoard scalars (needs the tensorboard package).")
flags.DEFINE_boolean("stop_on_nan", True, "Stop with an error (exit 1) at the first NaN/inf loss, keeping "
                     "the last good checkpoints; --nostop_on_nan trains on regardless.")
flags.DEFINE_boolean("plots", True, "At the end, draw loss/accuracy/LR curves from history.csv into "
                     "<work_dir>/curves.png (needs matplotlib).")
flags.DEFINE_integer("verbose", 1, "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")

CONFIG_FLAGS = ("model", "dataset", "data_dir", "cache_dir", "max_train", "max_test", "val_fraction",
                "epochs", "batch_size",
                "eval_batch_size", "lr", "momentum", "nesterov", "schedule", "final_lr",
                "milestones", "gamma", "warmup_epochs", "wd", "decay_small", "custom_decay_list",
                "custom_decay", "label_smoothing", "augment", "mixup", "cutmix", "grad_clip",
                "mixed_precision", "seed", "deterministic", "quant", "wbits", "abits",
                "quant_first_last", "quant_shortcut", "init_from", "work_dir", "resume", "evaluate_only",
                "checkpoint", "tensorboard", "verbose", "stop_on_nan")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unknown arguments: {argv[1:]}")
    print(f"quadkeras apps/train.py: {_common.backend_line()}", flush=True)
    from quadkeras.training import train

    config = {name: FLAGS[name].value for name in CONFIG_FLAGS}
    result = train(config)
    if FLAGS.evaluate_only:
        print(f"test_acc={result['test_acc']:.4f} ({result['checkpoint']})")
    elif FLAGS.plots:
        from quadkeras.report import plot_history, try_plot

        try_plot(plot_history, f"{FLAGS.work_dir}/history.csv", f"{FLAGS.work_dir}/curves.png")


if __name__ == "__main__":
    _common.run(main)
