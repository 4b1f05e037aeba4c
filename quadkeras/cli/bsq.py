"""BSQ app: convert / search / finetune / evaluate, each stage a training-engine run.

    # FP model -> 8-bit bit representation (BSQ's convert.py; --dict copies another scheme)
    quadkeras-bsq --flagfile=configs/resnet20_bsq_convert.cfg
    # ... from a PyTorch checkpoint: BSQ's released float ResNet-20 (or BSQ's own bit form)
    quadkeras-bsq --mode=convert --from_torch=../shared/data/bsq/resnet20_cifar10_fp.pth.tar \
        --model=resnet20 --dataset=cifar10 --wbits=8 --abits=4 --bsq_quantize_bias \
        --work_dir=runs/bsq_r20/convert
    # BSQ search from the 8-bit model (cifar_prune_STE.py: --bsq_decay, --bsq_prun_int)
    quadkeras-bsq --flagfile=configs/resnet20_bsq.cfg
    quadkeras-bsq --flagfile=configs/resnet20_bsq.cfg --resume   # after a kill
    # finetune with the scheme fixed; saves best_bin.keras and best_float.keras
    quadkeras-bsq --flagfile=configs/resnet20_bsq_finetune.cfg
    # accuracy, % of 1s per bit per layer, precision per layer, avg bits, compression (+JSON, PNG)
    quadkeras-bsq --mode=evaluate --model=runs/bsq/model_bin.keras --work_dir=runs/bsq_eval

All training runs on `quadkeras.training.train` (`quadkeras.bsq.stage`): the FP training of
`--mode=convert` (in `<work_dir>/fp`), the search (`--mode=train`, engine `bsq=search`) and the
finetune (`bsq=finetune`) each get a work_dir with atomic `last.keras` / `best.keras`,
`state.json`, exact `--resume` (the re-quantization schedule follows the epoch counter),
`history.csv` (with `avg_bits`), TensorBoard, `summary.json` (with a `bsq` entry), the
engine's multistep LR schedule and PyTorch-style coupled weight decay (`CoupledDecaySGD`,
torch momentum form), as the reference trains. The app then writes its BSQ files next to
them: `model_bin.keras` (search result), `best_bin.keras` / `best_float.keras` (finetune),
`<mode>_report.json` and `<mode>_bits.png`. A `--work_dir` whose outputs would overwrite
`--model` / `--dict` is refused before anything runs. Old spellings still work as deprecated
aliases: `--checkpoint` (= `--work_dir`), `--schedule` (= `--milestones`), `--nbits` (=
`--wbits`), `--decay`, `--prun_int`, `--precision_increase`, `--quantize_bias` (=
`--bsq_*`) and `--quantize_shortcuts` (= `--quant_shortcut`).

PyTorch in (`quadkeras.interop`): `--from_torch=<file.pth>` (convert) starts from a PyTorch
checkpoint instead of a `.keras` model, `--model` naming its network (zoo name / config): a
float one in QuadraLib's or bearpaw's / BSQ's layout is converted as BSQ's `convert.py` does;
BSQ's own bit form (`pweight` / `nweight` planes + `Nbit_dict`) is imported as it is (planes,
scales, precisions), with `--abits` as BSQ's `--act`. `--dict` takes a BSQ `.keras` or a BSQ
`.pth` (its `Nbit_dict`). Out: `quadkeras-convert --to_torch --torch_format=bsq_bits|bearpaw`.

Flags this invocation would not read are refused in one line, not ignored: `--fp_epochs` /
`--fp_lr` without a fresh zoo model to train (a `.keras` `--model` or `--from_torch`),
`--dict` / `--from_torch` outside `--mode=convert`, and `--dict`, `--quant_shortcut`,
`--bsq_quantize_bias` with a bit-form `--from_torch` (its planes decide). The evaluation batch
is BSQ's `--test-batch`, 100 (the activation grid is each batch's max, so accuracy depends on
it; `--eval_batch_size`).
"""

import os
import warnings

import keras
from absl import flags

from quadkeras.bsq import bsq_layers, bsq_report, format_report, save_report, to_bsq, to_float, to_representation
from quadkeras.bsq.stage import train_bsq
from quadkeras.cli import common
from quadkeras.cli.flag_table import define, define_aliases

from quadkeras.interop import import_torch_checkpoint, read_state_dict
from quadkeras.interop.bsq_checkpoint import bsq_scheme, import_bsq_checkpoint
from quadkeras.interop.layouts import is_bit_form
from quadkeras.models import build_model
from quadkeras.models.model_config import load_model, save_model
from quadkeras.training import checkpoint
from quadkeras.training.config import DEFAULTS
from quadkeras.training.trainer import load_run_data, test_accuracy, train
from quadkeras.training.work_dir import find_model_file

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "train", ["convert", "train", "finetune", "evaluate"], "What to do.")
# Engine keys the app does not expose: it sets the stage, the start model and the schedule kind.
HIDDEN = ("bsq", "init_from", "quant", "quant_first_last", "evaluate_only", "checkpoint", "schedule",
          "final_lr", "distribute")
KEYS = [k for k in DEFAULTS if k not in HIDDEN]
# BSQ's recipe (Yang et al.'s cifar_*.py) where it differs from the training defaults.
define(KEYS, model="resnet20", work_dir="runs/bsq", dataset="digits", wbits=8, abits=0, epochs=350,
       lr=0.1, milestones=["250"], wd=1e-4, grad_clip=0.0, augment="none", batch_size=128,
       eval_batch_size=100, verbose=2, notes={"eval_batch_size": "BSQ: its --test-batch, 100 (the "
                                               "activation grid is each batch's max)."})
define_aliases("nbits", checkpoint="work_dir", schedule="milestones", decay="bsq_decay",
               prun_int="bsq_prun_int", precision_increase="bsq_precision_increase",
               quantize_bias="bsq_quantize_bias", quantize_shortcuts="quant_shortcut")
flags.DEFINE_string("dict", None, "convert: BSQ model whose per-layer scheme to copy: a .keras file, or "
                    "a BSQ .pth (its Nbit_dict).")
flags.DEFINE_string("from_torch", None, "convert: start from this PyTorch checkpoint (.pth) instead of a "
                    ".keras --model (which then names its network: zoo name or config): a float one "
                    "(QuadraLib's or bearpaw's / BSQ's layout) is converted to --wbits; BSQ's bit form "
                    "is imported as it is, with --abits as BSQ's --act.")
flags.DEFINE_integer("fp_epochs", 0, "convert: train a freshly built FP model this many epochs "
                     "first (an engine run in <work_dir>/fp).")
flags.DEFINE_float("fp_lr", 0.1, "convert: LR of that FP training.")

# The files each mode writes into --work_dir (its inputs must not be among them).
RUN = checkpoint.RUN_FILES
OUTPUTS = {"convert": ("model_bin.keras", "convert_report.json", "convert_bits.png",
                       *(os.path.join("fp", name) for name in RUN)),
           "train": (*RUN, "model_bin.keras", "train_report.json", "train_bits.png"),
           "finetune": (*RUN, "best_bin.keras", "best_float.keras", "finetune_report.json",
                        "finetune_bits.png"),
           "evaluate": ("evaluate_report.json", "evaluate_bits.png")}


def _given(name):
    return FLAGS[name].present


def check_ignored_flags():
    """A flag this invocation would not read is refused (one line), not silently ignored."""
    convert = FLAGS.mode == "convert"
    for name in ("dict", "from_torch"):
        if _given(name) and not convert:
            raise ValueError(f"Invalid --{name}={FLAGS[name].value!r} with --mode={FLAGS.mode}: it is read "
                             "only by --mode=convert.")
    fp_run = convert and not FLAGS.from_torch and not FLAGS.model.endswith(".keras")
    why = ("--mode=convert" if not convert else "--from_torch (the checkpoint is the FP model)"
           if FLAGS.from_torch else f"a .keras --model={FLAGS.model!r} (the FP model is given)")
    for name in ("fp_epochs", "fp_lr"):
        if _given(name) and not fp_run:
            raise ValueError(f"Invalid --{name}={FLAGS[name].value!r}: no FP training runs with {why}; it "
                             "trains a fresh zoo --model (e.g. --model=resnet20) before converting.")
    if _given("fp_lr") and not FLAGS.fp_epochs:
        raise ValueError(f"Invalid --fp_lr={FLAGS.fp_lr!r}: no FP training runs without --fp_epochs > 0.")
    if FLAGS.from_torch and FLAGS.model.endswith(".keras"):
        raise ValueError(f"Invalid --model={FLAGS.model!r} with --from_torch: --model names the "
                         "checkpoint's network here (zoo name or model config, e.g. resnet20).")


def check_flags():
    """One-line errors before any work: bad --abits / --bsq_decay, an output that is an input,
    a flag that would be ignored (`check_ignored_flags`)."""
    check_ignored_flags()
    if not 0 <= FLAGS.abits <= 8:
        raise ValueError(f"Invalid --abits={FLAGS.abits}: expected 0 (float activations) or 1..8.")
    if FLAGS.bsq_decay < 0:
        raise ValueError(f"Invalid --decay={FLAGS.bsq_decay}: expected a number >= 0 (BSQ's alpha).")
    outputs = {os.path.realpath(os.path.join(FLAGS.work_dir, name)): name for name in OUTPUTS[FLAGS.mode]}
    for flag, path in (("--model", FLAGS.model), ("--dict", FLAGS.dict)):
        if path and os.path.realpath(path) in outputs:
            raise ValueError(f"Invalid --work_dir={FLAGS.work_dir!r}: --mode={FLAGS.mode} would "
                             f"overwrite the input {flag}={path!r} ({outputs[os.path.realpath(path)]}); "
                             "choose another --work_dir.")


def engine_config(**overrides):
    """The training-engine config of this invocation (every exposed flag, a multistep schedule)."""
    config = {key: FLAGS[key].value for key in KEYS}
    config.update(schedule="multistep", **overrides)
    return config


def _check_keras(path, flag="--model"):
    if not path.endswith(".keras"):
        raise ValueError(f"Invalid {flag}={path!r}: expected a .keras file for --mode={FLAGS.mode}.")
    return path


def _load(path, flag="--model"):
    return load_model(_check_keras(path, flag), flag)


def _out(name):
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    return os.path.join(FLAGS.work_dir, name)


def _report(model, data, prefix):
    acc = test_accuracy(model, data, FLAGS.eval_batch_size, FLAGS.data_pipeline)
    report = bsq_report(model, accuracy=100.0 * acc)
    print(format_report(report))
    save_report(report, _out(f"{prefix}_report.json"), _out(f"{prefix}_bits.png"))
    return report


def _load_dict():
    """The --dict scheme (a BSQ .keras model, or a BSQ .pth's Nbit_dict as {layer: bits}),
    checked before any work."""
    if not FLAGS.dict:
        return None
    if FLAGS.dict.endswith((".pth", ".pth.tar", ".pt")):
        return bsq_scheme(FLAGS.dict)
    model = _load(FLAGS.dict, "--dict")
    if not bsq_layers(model):
        raise ValueError(f"Invalid --dict={FLAGS.dict!r}: it holds no BSQ layers (a plain model, "
                         "not one quadkeras-bsq wrote); expected a BSQ .keras such as "
                         "<work_dir>/model_bin.keras whose per-layer bits to copy.")
    return model


def _torch_model():
    """(model, is_bit_form) of --from_torch: a float zoo model, or BSQ's bit form imported."""
    with warnings.catch_warnings():  # the import below reads (and warns about) the file again
        warnings.simplefilter("ignore")
        bit_form = is_bit_form(read_state_dict(FLAGS.from_torch))
    if not bit_form:
        return import_torch_checkpoint(FLAGS.from_torch, FLAGS.model), False
    for name in ("dict", "quant_shortcut", "bsq_quantize_bias"):
        if _given(name):
            raise ValueError(f"Invalid --{name}={FLAGS[name].value!r} with --from_torch={FLAGS.from_torch!r}: "
                             "BSQ's bit form holds its own scheme, shortcuts and bias bits.")
    return import_bsq_checkpoint(FLAGS.from_torch, FLAGS.model, abits=FLAGS.abits, wbits=FLAGS.wbits), True


def _check_fits(model, data):
    """One line when --dataset's images or classes do not fit the model."""
    shape, classes = tuple(model.input_shape[1:]), int(model.output_shape[-1])
    if shape != tuple(data.input_shape) or classes != data.num_classes:
        raise ValueError(f"Invalid --dataset={FLAGS.dataset!r} for the model of --from_torch / --model: "
                         f"images {tuple(data.input_shape)}, {data.num_classes} classes; the model takes "
                         f"{shape}, {classes} classes.")


def convert():
    scheme = _load_dict()  # before the FP training: a bad --dict must not cost a run
    fp, bits = (_torch_model() if FLAGS.from_torch else (None, False))
    data = load_run_data(engine_config())
    if fp is not None:
        _check_fits(fp, data)
    elif FLAGS.model.endswith(".keras"):
        fp = _load(FLAGS.model)
    elif FLAGS.fp_epochs:
        fp_dir = os.path.join(FLAGS.work_dir, "fp")
        train(engine_config(epochs=FLAGS.fp_epochs, lr=FLAGS.fp_lr, work_dir=fp_dir))
        fp = load_model(os.path.join(fp_dir, checkpoint.LAST), "work_dir last")
    else:
        fp = build_model(FLAGS.model, num_classes=data.num_classes, input_shape=data.input_shape)
    model = fp if bits else to_bsq(fp, bits=FLAGS.wbits, scheme=scheme, abits=FLAGS.abits,
                                   quantize_shortcuts=FLAGS.quant_shortcut,
                                   quantize_bias=FLAGS.bsq_quantize_bias)
    save_model(model, _out("model_bin.keras"))
    _report(model, data, "convert")


def search():
    config = engine_config(bsq="search", init_from=_check_keras(FLAGS.model))
    summary = train_bsq(config)
    model = load_model(os.path.join(FLAGS.work_dir, checkpoint.LAST), "work_dir last")
    print(f"BSQ search: alpha={FLAGS.bsq_decay}, scheme {summary['bsq']['scheme']}")
    save_model(model, _out("model_bin.keras"))
    _report(model, load_run_data(config), "train")


def finetune():
    config = engine_config(bsq="finetune", init_from=_check_keras(FLAGS.model))
    train_bsq(config)
    best = find_model_file(FLAGS.work_dir, "work_dir")
    model = to_representation(load_model(best, "work_dir best"), "bits")
    save_model(model, _out("best_bin.keras"))
    save_model(to_float(model), _out("best_float.keras"))
    _report(model, load_run_data(config), "finetune")


def evaluate():
    model = _load(FLAGS.model)
    if not bsq_layers(model):
        raise ValueError(f"Invalid --model={FLAGS.model!r}: no BSQ layer; evaluate a BSQ model.")
    _report(model, load_run_data(engine_config()), "evaluate")


def app_main(argv):
    del argv
    check_flags()
    print(f"quadkeras-bsq --mode={FLAGS.mode}: {common.backend_line()}", flush=True)
    keras.utils.set_random_seed(FLAGS.seed)
    {"convert": convert, "train": search, "finetune": finetune, "evaluate": evaluate}[FLAGS.mode]()


def main(argv=None):
    """The console script `quadkeras-bsq` (argv: default sys.argv)."""
    common.run(app_main, argv)


if __name__ == "__main__":
    main()
