"""Accuracy vs average weight bits of BSQ for several alpha (training-engine runs), resumable.

From BSQ's released float ResNet-20 (or QuadraLib's QResNet14), the CPU-sized schedule of
issue #27 (10 search epochs, re-quantization every 2, 5 finetune epochs, the whole 50k split):

    KERAS_BACKEND=torch python bench/bsq_sweep.py --recipe=cpu --dataset=cifar10 \\
        --from_torch=../shared/data/bsq/resnet20_cifar10_fp.pth.tar --model=resnet20 \\
        --out=runs/bsq_cpu_r20 --json=runs/bsq_cpu_r20/sweep.json --plot=runs/bsq_cpu_r20/sweep.png

`--recipe=reference` is the authors' recipe (350 search epochs, lr 0.1 step at 250, Prun_Int
100, then 300 finetune epochs, lr 0.01 steps at 150 / 250, coupled wd 1e-4; as
configs/resnet20_bsq*.cfg), for a GPU (bench/gpu/bsq_recipe.sh). A recipe only fills the flags
not given; `--recipe=none` (default) keeps the flag defaults below (the digits proxy).

Pipeline per alpha (as in the BSQ paper): FP model -> 8-bit bit representation -> BSQ search
(`--epochs`, re-quantize / adjust every `--prun_int`) -> finetune with the scheme fixed
(`--ft_epochs`). The FP model is trained (`fp/`, an engine run) or, with `--from_torch`, the
imported PyTorch checkpoint (`fp/model.keras` + `fp/summary.json` with its test accuracy, no
training). The 8-bit conversion is evaluated once (`convert.json`: BSQ's `convert.py` number).
Every search / finetune is a `quadkeras.training.train` run in `a<alpha>/search/`,
`a<alpha>/finetune/`: a run that already finished is reused and a killed one resumes from its
last finished epoch, so the sweep can be killed (e.g. `timeout 540`) and re-run to continue.
Evaluation batch 100 by default (BSQ's `--test-batch`; block activations are quantized on each
batch's max, so the accuracy depends on it). Prints a markdown table per alpha (accuracy after
search / finetune, average bits, compression, bits per layer; quadratic layers per branch,
`name[a]`) and writes it to `<out>/table.md`, plus `--json` / `--plot`.
"""

import functools
import json
import os

import keras
from absl import app, flags

from quadkeras.bsq import train_bsq
from quadkeras.training import checkpoint, train
from quadkeras.utils.safe_io import read_json, write_atomic, write_json

FLAGS = flags.FLAGS
flags.DEFINE_enum("recipe", "none", ["none", "cpu", "reference"],
                  "Schedule preset for the flags not given: cpu (issue #27's CPU-sized run), reference "
                  "(BSQ's 350 + 300 epochs), none (the flag defaults).")
flags.DEFINE_list("alphas", ["0", "0.1", "0.3", "1.0"], "Regulariser strengths alpha (0: the control).")
flags.DEFINE_string("model", "tiny", "FP model: 'tiny' (a small digits ResNet) or a zoo name; with "
                    "--from_torch the checkpoint's network (resnet20, qresnet14).")
flags.DEFINE_string("from_torch", None, "FP model = this PyTorch checkpoint (QuadraLib's or bearpaw's / "
                    "BSQ's layout), imported and evaluated once instead of trained.")
flags.DEFINE_string("dataset", "digits", "Data set.")
flags.DEFINE_string("data_dir", None, "Data folder / archive (CIFAR; default: the shared copy).")
flags.DEFINE_integer("max_train", 0, "Seeded training subset (0 = all).")
flags.DEFINE_integer("max_test", 0, "Seeded test subset (0 = all).")
flags.DEFINE_string("augment", "none", "Augmentation preset of every stage (BSQ: crop_flip).")
flags.DEFINE_integer("epochs", 6, "BSQ search epochs.")
flags.DEFINE_integer("prun_int", 2, "Epochs between precision adjustments (BSQ's Prun_Int).")
flags.DEFINE_integer("ft_epochs", 2, "Finetune epochs with the scheme fixed (0: none).")
flags.DEFINE_integer("fp_epochs", 15, "FP training epochs (not with --from_torch).")
flags.DEFINE_integer("wbits", 8, "Bits of the conversion the search starts from.")
flags.DEFINE_integer("abits", 4, "Block activation bits of the BSQ model (0 = float).")
flags.DEFINE_boolean("bsq_quantize_bias", False, "FC bias in bit form too (BSQ's --bin).")
flags.DEFINE_float("fp_lr", 0.05, "FP training LR (constant).")
flags.DEFINE_float("lr", 0.05, "BSQ search LR.")
flags.DEFINE_float("ft_lr", 0.01, "Finetune LR.")
flags.DEFINE_enum("schedule", "constant", ["constant", "multistep"], "LR schedule of search and finetune.")
flags.DEFINE_list("milestones", [], "Search epochs where the LR is multiplied by --gamma (multistep).")
flags.DEFINE_list("ft_milestones", [], "Finetune epochs where the LR is multiplied by --gamma (multistep).")
flags.DEFINE_float("gamma", 0.1, "LR factor at each milestone.")
flags.DEFINE_float("fp_wd", 5e-4, "FP coupled weight decay.")
flags.DEFINE_float("wd", 0.0, "Search / finetune coupled weight decay.")
flags.DEFINE_integer("batch_size", 64, "Batch size (even).")
flags.DEFINE_integer("eval_batch_size", 100, "Test batch size (BSQ's --test-batch: 100).")
flags.DEFINE_enum("data_pipeline", "auto", ["auto", "tf", "numpy"], "Input pipeline (numpy: no TensorFlow).")
flags.DEFINE_string("out", "runs/bsq_sweep", "Folder of the stage work_dirs.")
flags.DEFINE_string("json", None, "Write the results here.")
flags.DEFINE_string("plot", None, "Draw accuracy vs compression rate into this PNG.")

TINY_RESNET = {"family": "resnet", "input_shape": [16, 16, 1], "num_classes": 10, "stem_filters": 8,
               "stages": [{"filters": 8, "blocks": 1, "stride": 1}, {"filters": 16, "blocks": 1, "stride": 2}]}
COMMON = {"augment": "crop_flip", "batch_size": 128, "wd": 1e-4, "gamma": 0.1, "schedule": "multistep",
          "abits": 4, "wbits": 8, "bsq_quantize_bias": True, "lr": 0.1, "ft_lr": 0.01}
# issue #27's CPU-sized schedule, shaped like the reference (LR step at 70 %, finetune steps at
# 50 / 83 %); alphas scaled for ~35x fewer lr-weighted SGD steps than the reference (an estimate)
RECIPES = {
    "cpu": {**COMMON, "epochs": 10, "prun_int": 2, "milestones": ["7"], "ft_epochs": 5,
            "ft_milestones": ["3", "4"], "alphas": ["0", "0.03", "0.1", "0.3"]},
    "reference": {**COMMON, "epochs": 350, "prun_int": 100, "milestones": ["250"], "ft_epochs": 300,
                  "ft_milestones": ["150", "250"], "alphas": ["0", "0.002", "0.005", "0.01"]},
}


def apply_recipe():
    """Fill the flags the command line did not give from `--recipe`."""
    for name, value in RECIPES.get(FLAGS.recipe, {}).items():
        if not FLAGS[name].present:
            FLAGS[name].value = value


def check_flags():
    if FLAGS.from_torch and FLAGS.model == "tiny":
        raise ValueError("Invalid --model=tiny with --from_torch: name the checkpoint's network "
                         "(resnet20, qresnet14, or a model config).")
    if FLAGS.from_torch and FLAGS["fp_epochs"].present:
        raise ValueError(f"Invalid --fp_epochs={FLAGS.fp_epochs} with --from_torch: the checkpoint is the "
                         "FP model (nothing is trained).")
    if FLAGS.model == "tiny" and FLAGS.dataset != "digits":
        raise ValueError("Invalid --model=tiny: the tiny ResNet takes 16x16x1 digits; pass a zoo name.")
    if FLAGS.schedule == "constant" and (FLAGS.milestones or FLAGS.ft_milestones):
        raise ValueError("Invalid --milestones / --ft_milestones with --schedule=constant: expected "
                         "--schedule=multistep.")


def _base():
    return {"dataset": FLAGS.dataset, "data_dir": FLAGS.data_dir, "max_train": FLAGS.max_train,
            "max_test": FLAGS.max_test, "batch_size": FLAGS.batch_size, "augment": FLAGS.augment,
            "eval_batch_size": FLAGS.eval_batch_size, "data_pipeline": FLAGS.data_pipeline,
            "grad_clip": 0.0, "tensorboard": False, "verbose": 0, "seed": 0}


def _run(work_dir, **config):
    """One engine run; resumed if `work_dir` holds a finished epoch (a finished run returns its summary)."""
    resume = os.path.exists(os.path.join(work_dir, checkpoint.STATE))
    if not resume:  # killed before its first epoch ended: nothing to keep
        for name in checkpoint.RUN_FILES:
            if os.path.exists(os.path.join(work_dir, name)):
                os.remove(os.path.join(work_dir, name))
    run = {**_base(), **config, "work_dir": work_dir, "resume": resume}
    return (train_bsq if run.get("bsq") else train)(run)


@functools.lru_cache(maxsize=1)
def _data():
    from quadkeras.training.trainer import load_run_data  # noqa: PLC0415

    return load_run_data(_base())


def _accuracy(model, data):
    from quadkeras.training.trainer import test_accuracy  # noqa: PLC0415

    return test_accuracy(model, data, FLAGS.eval_batch_size, FLAGS.data_pipeline)


def _cached(path, expected, compute):
    """The JSON at `path` if it was computed with `expected` (else one-line error), or compute it."""
    if os.path.exists(path):
        found = read_json(path, "--out file")
        differing = sorted(k for k in expected if found.get(k) != expected[k])
        if differing:
            raise ValueError(f"Invalid --out={FLAGS.out!r}: {path} was written with other "
                             f"{', '.join(differing)} ({', '.join(repr(found.get(k)) for k in differing)}); "
                             "use another --out or the same flags.")
        return found
    result = {**expected, **compute()}
    write_json(path, result)
    return result


def fp_stage():
    """(FP summary with `test_acc`, path of the FP .keras)."""
    work_dir = os.path.join(FLAGS.out, "fp")
    if not FLAGS.from_torch:
        model = TINY_RESNET if FLAGS.model == "tiny" else FLAGS.model
        summary = _run(work_dir, model=model, epochs=FLAGS.fp_epochs, lr=FLAGS.fp_lr, wd=FLAGS.fp_wd,
                       schedule="constant")
        return summary, os.path.join(work_dir, checkpoint.LAST)
    path = os.path.join(work_dir, "model.keras")

    def imported():
        from quadkeras.interop import import_torch_checkpoint  # noqa: PLC0415
        from quadkeras.models.model_config import save_model  # noqa: PLC0415

        model = import_torch_checkpoint(FLAGS.from_torch, FLAGS.model)
        acc = _accuracy(model, _data())
        os.makedirs(work_dir, exist_ok=True)
        save_model(model, path)
        return {"test_acc": acc}

    expected = {"from_torch": os.path.abspath(FLAGS.from_torch), "model": FLAGS.model, **_eval_keys()}
    summary_path = os.path.join(work_dir, "summary.json")
    if os.path.exists(summary_path) and not os.path.exists(path):  # the model file was removed: import again
        os.remove(summary_path)
    return _cached(summary_path, expected, imported), path


def _eval_keys():
    return {"dataset": FLAGS.dataset, "max_test": FLAGS.max_test, "eval_batch_size": FLAGS.eval_batch_size}


def convert_stage(fp_path):
    """BSQ's `convert.py`: the FP model at --wbits bits, evaluated once (`<out>/convert.json`)."""
    def convert():
        from quadkeras.bsq import bsq_report, to_bsq  # noqa: PLC0415
        from quadkeras.models.model_config import load_model  # noqa: PLC0415

        model = to_bsq(load_model(fp_path), bits=FLAGS.wbits, abits=FLAGS.abits,
                       quantize_bias=FLAGS.bsq_quantize_bias)
        report = bsq_report(model)
        return {"test_acc": _accuracy(model, _data()), "average_bits": report["average_bits"],
                "total_params": report["total_params"]}

    expected = {"fp": os.path.abspath(fp_path), "wbits": FLAGS.wbits, "abits": FLAGS.abits,
                "bsq_quantize_bias": FLAGS.bsq_quantize_bias, **_eval_keys()}
    return _cached(os.path.join(FLAGS.out, "convert.json"), expected, convert)


def _schedule(milestones):
    return {"schedule": FLAGS.schedule, "gamma": FLAGS.gamma,
            "milestones": [int(m) for m in milestones] if FLAGS.schedule == "multistep" else []}


def alpha_stage(alpha, fp_path):
    folder = os.path.join(FLAGS.out, f"a{alpha:g}")
    search = _run(os.path.join(folder, "search"), bsq="search", init_from=fp_path, wbits=FLAGS.wbits,
                  abits=FLAGS.abits, bsq_quantize_bias=FLAGS.bsq_quantize_bias, epochs=FLAGS.epochs,
                  lr=FLAGS.lr, wd=FLAGS.wd, bsq_decay=alpha, bsq_prun_int=FLAGS.prun_int,
                  **_schedule(FLAGS.milestones))
    row = {"alpha": alpha, "acc_after_bsq": 100 * search["test_acc"], "scheme": search["bsq"]["scheme"],
           "average_bits": search["bsq"]["average_bits"], "compression_rate": search["bsq"]["compression_rate"],
           "seconds": search["wall_time_s"]}
    if FLAGS.ft_epochs:
        ft = _run(os.path.join(folder, "finetune"), bsq="finetune",
                  init_from=os.path.join(folder, "search", checkpoint.LAST), epochs=FLAGS.ft_epochs,
                  lr=FLAGS.ft_lr, wd=FLAGS.wd, **_schedule(FLAGS.ft_milestones))
        row["acc_after_finetune"] = 100 * ft["test_acc"]
        row["seconds"] += ft["wall_time_s"]
    else:
        row["acc_after_finetune"] = row["acc_after_bsq"]
    report = _bits_plot(os.path.join(folder, "search", checkpoint.LAST), folder, row["acc_after_finetune"])
    row["scheme"] = {layer["name"]: layer["precision"] for layer in report["layers"]}  # model order
    return row


def _bits_plot(model_path, folder, acc):
    """`<folder>/bits.json` + `bits.png`: the searched scheme (precision per layer / branch)."""
    from quadkeras.bsq import bsq_report, save_report  # noqa: PLC0415

    report = bsq_report(keras.models.load_model(model_path), accuracy=acc)
    try:
        save_report(report, os.path.join(folder, "bits.json"), os.path.join(folder, "bits.png"))
    except ImportError:  # matplotlib missing: the JSON is enough
        save_report(report, os.path.join(folder, "bits.json"))
    return report


def table(rows, fp_summary, converted=None):
    head = (f"backend {keras.backend.backend()}; {FLAGS.dataset} test set "
            f"({'all' if not FLAGS.max_test else FLAGS.max_test} images, batch {FLAGS.eval_batch_size}); "
            f"FP {100 * fp_summary['test_acc']:.2f} %")
    if converted is not None:
        head += (f"; {FLAGS.wbits}-bit conversion ({FLAGS.abits or 'float'}-bit activations) "
                 f"{100 * converted['test_acc']:.2f} %")
    lines = [head, "", "| alpha | acc after BSQ (%) | acc after finetune (%) | avg bits | compression | scheme |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        scheme = " ".join(str(b) for b in r.get("scheme", {}).values())
        lines.append(f"| {r['alpha']:g} | {r['acc_after_bsq']:.2f} | {r['acc_after_finetune']:.2f} | "
                     f"{r['average_bits']:.2f} | {32 / r['average_bits']:.1f}x | {scheme} |")
    if rows:
        lines += ["", "scheme order: " + " ".join(rows[0].get("scheme", {}))]
    return "\n".join(lines)


def main(argv):
    del argv
    apply_recipe()
    check_flags()
    fp_summary, fp_path = fp_stage()
    print(f"FP: {100 * fp_summary['test_acc']:.2f} %", flush=True)
    converted = convert_stage(fp_path)
    print(f"{FLAGS.wbits}-bit conversion: {100 * converted['test_acc']:.2f} %", flush=True)
    rows = []
    for alpha in FLAGS.alphas:
        rows.append(alpha_stage(float(alpha), fp_path))
        print(json.dumps(rows[-1]), flush=True)
    text = table(rows, fp_summary, converted)
    print(text)

    def write_text(tmp):
        with open(tmp, "w") as f:
            f.write(text + "\n")
    write_atomic(os.path.join(FLAGS.out, "table.md"), write_text)
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        write_json(FLAGS.json, {"recipe": FLAGS.recipe, "fp": fp_summary, "convert": converted, "rows": rows})
    if FLAGS.plot:
        from quadkeras.report import plot_sweep, try_plot  # noqa: PLC0415

        try_plot(plot_sweep, rows, FLAGS.plot)


if __name__ == "__main__":
    from quadkeras.cli.common import one_line_errors

    app.run(one_line_errors(main))  # bad flags: `error: <one line>`, exit 1
