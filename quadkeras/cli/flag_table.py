"""One table of the apps' flags: each flag's type, help and (for training keys) default.

Every app (`quadkeras.cli.<app>`) defines its flags with `define(names, **defaults)`: the
type and help come from `TABLE`, the default from `quadkeras.training.config.DEFAULTS` (the one place training
defaults live) unless the app passes its own recipe's value (BSQ's 350 epochs, ...).
The quantizer flags are spelled `--quant` / `--wbits` / `--abits` in every app; the old
per-app spellings stay as deprecated aliases (`define_aliases`). `--quant` takes a method
(`lsq`, `dorefa`, `fakequant`, ...) or a preset (`int8`, `int8_qat`, `int8_qat_fold_bn`, and with
`--init_from` `int8_all`: the all-int8 graph of a trained model); the export app's `--quant`
takes the presets whose fake-quant graph its calibration fills (`int8`, `int8_all`, `int8_qat`).
train, bsq, summary, export, auto_build and convert all define their shared flags here;
`define(names, notes={name: ...})` adds what a flag means in one app to the table's help.
`--work_dir` is always the output folder, `--checkpoint` always a model file to read, and
`--schedule` always the LR schedule kind (`--milestones` the epochs of a step schedule).

Example:

>>> kind, _, bounds = TABLE["wbits"]
>>> kind, bounds
('integer', {'lower_bound': 0, 'upper_bound': 32})
"""

from absl import flags

from quadkeras.data.loaders import DATASETS
from quadkeras.data.pipeline import AUGMENT_PRESETS, PIPELINES
from quadkeras.training.config import DEFAULTS, DISTRIBUTE, JIT_COMPILE, MIXED_PRECISION
from quadkeras.training.config import BSQ_STAGES
from quadkeras.optimizers.sgd import MOMENTUM_FORMS
from quadkeras.optimizers.schedules import SCHEDULES

BITS = {"lower_bound": 0, "upper_bound": 32}  # a bit-width flag (each method narrows it)


class ShapeParser(flags.ListParser):
    """`H,W,C` -> [H, W, C] (positive integers); anything else is a one-line flag error.

    >>> ShapeParser().parse("16,16,1")
    [16, 16, 1]
    >>> ShapeParser().parse("abc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 'abc' is not H,W,C: expected three positive integers ...
    """

    def parse(self, argument):
        parts = super().parse(argument)
        if not parts:  # --input_shape= : keep the model config's shape
            return []
        dims = [int(p) for p in parts if p.strip().isdigit()]
        if len(parts) != 3 or len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"{','.join(parts)!r} is not H,W,C: expected three positive "
                             "integers (e.g. 16,16,1).")
        return dims

    def flag_type(self):
        return "shape"


# name: (absl kind, help), (kind, help, enum values) or (kind, help, {absl keyword: value}).
TABLE = {
    "model": ("string", "Zoo name, model config (.yaml/.json), .keras model or training work_dir "
                        "(what each app accepts is in its docstring)."),
    "dataset": ("enum", "Data set.", list(DATASETS)),
    "data_dir": ("string", "CIFAR .tar.gz, image folder or pickle folder."),
    "cache_dir": ("string", "Decoded-data cache (default $QUADKERAS_CACHE or ~/.cache/quadkeras)."),
    "max_train": ("integer", "Use a seeded random subset of N training examples (0 = all; smoke runs).",
                  {"lower_bound": 0}),
    "max_test": ("integer", "Use a seeded random subset of N test examples (0 = all).",
                 {"lower_bound": 0}),
    "val_fraction": ("float", "Hold out this seeded fraction of the training split (seed = --seed) "
                              "as validation data: best.keras and val_acc use it, the test split is "
                              "evaluated once at the end; 0 = validate on the test split (seed recipe)."),
    "epochs": ("integer", "Training epochs."),
    "batch_size": ("integer", "Training batch size."),
    "eval_batch_size": ("integer", "Evaluation batch size."),
    "lr": ("float", "Base learning rate."),
    "momentum": ("float", "SGD momentum."),
    "nesterov": ("boolean", "Nesterov momentum."),
    "momentum_form": ("enum", "Where the LR enters the momentum buffer: torch.optim.SGD's form "
                              "(b = m b + g; w -= lr b; the seed recipe) or Keras' (v = m v - lr g; "
                              "w += v); they differ after each LR change.", list(MOMENTUM_FORMS)),
    "schedule": ("enum", "LR schedule (per epoch).", list(SCHEDULES)),
    "final_lr": ("float", "Cosine: LR reached at the last epoch."),
    "milestones": ("list", "Step schedules: epochs where the LR is multiplied by --gamma."),
    "gamma": ("float", "Step schedules: LR factor at each milestone."),
    "warmup_epochs": ("float", "Linear warmup length in epochs (per step)."),
    "wd": ("float", "Coupled L2 weight decay (PyTorch SGD style)."),
    "decay_small": ("boolean", "No decay on <=1-D params (BN, bias) and quantizer params."),
    "custom_decay_list": ("string", "Comma-separated regexes of variable paths with custom decay."),
    "custom_decay": ("float", "Decay for variables matched by --custom_decay_list."),
    "label_smoothing": ("float", "Label smoothing."),
    "augment": ("enum", "Augmentation preset.", list(AUGMENT_PRESETS)),
    "mixup": ("float", "MixUp alpha (keras.layers.MixUp); 0 = off."),
    "cutmix": ("float", "CutMix factor (keras.layers.CutMix); 0 = off."),
    "data_pipeline": ("enum", "Input pipeline: tf.data, NumPy batches (no TensorFlow needed), "
                              "or auto (tf when TensorFlow is installed).", list(PIPELINES)),
    "grad_clip": ("float", "Global gradient-norm clip; 0 = off."),
    "mixed_precision": ("enum", "Mixed precision compute dtype.", list(MIXED_PRECISION)),
    "seed": ("integer", "Random seed (init, data order, augmentation)."),
    "deterministic": ("boolean", "TensorFlow op determinism."),
    "quant": ("string", "Quantization: a method ('' = float; lsq, dorefa, pact, fakequant, ...) "
                        "with --wbits/--abits, or a preset (int8 = the best int8 graph: int8_all "
                        "with --init_from, else int8_qat; int8_qat, int8_qat_fold_bn; int8_all = "
                        "BN folded, every CONV/MUL/ADD int8, needs --init_from)."),
    "wbits": ("integer", "Weight bits with a --quant method (BSQ: starting precision); 0 or 32 = "
                         "float.", BITS),
    "abits": ("integer", "Activation bits with a --quant method; 0 or 32 = float.", BITS),
    "quant_first_last": ("boolean", "Also quantize the first and last layers."),
    "quant_shortcut": ("boolean", "Also quantize ResNet 1x1 shortcut convs."),
    "init_from": ("string", "Start from this .keras model's weights (e.g. QAT from a float "
                            "checkpoint, quantized per --quant); --model is then ignored."),
    "work_dir": ("string", "Output folder: checkpoints, logs, reports and summaries go here."),
    "resume": ("boolean", "Continue the run in --work_dir exactly where it stopped."),
    "evaluate_only": ("boolean", "Only evaluate --checkpoint (default work_dir/best.keras)."),
    "checkpoint": ("string", "A .keras model file to read (train: the one --evaluate_only "
                             "evaluates)."),
    "tensorboard": ("boolean", "Write TensorBoard scalars (needs the tensorboard package)."),
    "stop_on_nan": ("boolean", "Stop with an error (exit 1) at the first NaN/inf loss, keeping the "
                               "last good checkpoints; --nostop_on_nan trains on regardless."),
    "distribute": ("enum", "Data-parallel training over every visible device ('' = one device): "
                           "jax DataParallel, tf MirroredStrategy / MultiWorkerMirroredStrategy, "
                           "torch DDP (launch with torchrun); --batch_size is the global batch "
                           "(docs/training.md).", list(DISTRIBUTE)),
    "jit_compile": ("enum", "Compile the train, eval and predict steps: auto (torch: torch.compile "
                            "with CUDA, eager on a CPU; tensorflow/jax: Keras' choice, XLA / jax.jit), "
                            "true (torch: torch.compile with static shapes), false, reduce_overhead "
                            "(torch only: torch.compile mode='reduce-overhead', CUDA graphs on a GPU; "
                            "like true on a CPU). Unset: auto, and --resume keeps the run's own "
                            "setting; given on --resume, it wins. The first step's seconds (compile) "
                            "are printed once (docs/training.md, 'Which backend and jit_compile for "
                            "which device').",
                    list(JIT_COMPILE)),
    "verbose": ("integer", "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch."),
    "input_shape": ("shape", "Replace the model config's input shape: H,W,C (e.g. 16,16,1)."),
    "plot": ("string", "Also draw this app's figure into this PNG."),
    # BSQ stages on the training engine (quadkeras.bsq.stage; apps/bsq.py sets --bsq itself).
    "bsq": ("enum", "BSQ stage of this run: 'search' (bit planes + bit-level group Lasso, precision "
                    "adjusted every --bsq_prun_int epochs) or 'finetune' (scheme fixed); both start "
                    "from --init_from; '' = plain training.", list(BSQ_STAGES)),
    "bsq_decay": ("float", "BSQ search: bit-level group Lasso strength alpha (BSQ's --decay)."),
    "bsq_prun_int": ("integer", "BSQ search: epochs between re-quantization / precision adjustment "
                                "(BSQ's --Prun_Int)."),
    "bsq_precision_increase": ("boolean", "BSQ search: a layer whose re-quantized values overflow its "
                                          "n bits gains one bit (n < 8, as BSQ's quant()); false: clip."),
    "bsq_quantize_bias": ("boolean", "BSQ search from a float model: also bit-quantize and regularise "
                                     "the biases of the quantized first-order layers (BSQ's --bin)."),
}

# Deprecated spellings -> the flag they now name (apps/bsq.py's --checkpoint was its output
# folder and --schedule its milestones: there they alias --work_dir and --milestones).
ALIASES = {"quantize": "quant", "weight_bits": "wbits", "activation_bits": "abits",
           "nbits": "wbits"}


def define(names, notes=None, flag_values=flags.FLAGS, **defaults):
    """Define the flags `names` from `TABLE` (defaults: `defaults`, else `DEFAULTS`).

    `notes`: {name: what the flag means in this app}, added to the table's help.
    `flag_values`: where to define them (absl's global `FLAGS`; a test passes its own)."""
    notes = notes or {}
    for name in names:
        kind, text, *extra = TABLE[name]
        text = f"{text} {notes[name]}" if name in notes else text
        default = defaults.get(name, DEFAULTS.get(name))
        if kind == "enum":
            flags.DEFINE_enum(name, default, extra[0], text, flag_values=flag_values)
        elif kind == "shape":
            flags.DEFINE(ShapeParser(), name, default, text, flag_values=flag_values,
                         serializer=flags.CsvListSerializer(","))
        else:
            getattr(flags, f"DEFINE_{kind}")(name, default, text, flag_values=flag_values,
                                             **(extra[0] if extra else {}))


def define_aliases(*names, **renamed):
    """Keep old spellings working: `--<alias>` sets the flag `ALIASES[alias]` (or, for an
    app's own old names, `renamed[alias]`)."""
    for alias, target in [(n, ALIASES[n]) for n in names] + list(renamed.items()):
        flags.DEFINE_alias(alias, target)
