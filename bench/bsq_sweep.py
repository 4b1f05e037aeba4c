"""Accuracy vs average weight bits of BSQ for several alpha (training-engine runs, CPU-sized).

    KERAS_BACKEND=jax python bench/bsq_sweep.py --alphas=0.1,0.3,1 --epochs=6 --prun_int=2 \\
        --abits=4 --out=runs/bsq_sweep --json=runs/bsq_sweep/sweep.json --plot=runs/bsq_sweep/sweep.png

Pipeline per alpha (as in the BSQ paper): FP model -> 8-bit bit representation -> BSQ search
(`--epochs`, re-quantize / adjust every `--prun_int`) -> finetune with the scheme fixed
(`--ft_epochs`). Every stage is a `quadkeras.training.train` run with its own work_dir under
`--out` (`fp/`, `a<alpha>/search/`, `a<alpha>/finetune/`): checkpoints, history.csv,
summary.json; a run that already finished is reused and a killed one resumes, so the sweep
can be re-run after an interruption. `--dataset=cifar10 --max_train=5000` etc. runs the same
pipeline on a CIFAR-10 subset (`--model`: zoo name or model config). Prints a markdown table
and writes JSON / PNG.
"""

import json
import os

import keras
from absl import app, flags

from quadkeras.training import train

FLAGS = flags.FLAGS
flags.DEFINE_list("alphas", ["0.1", "0.3", "1.0"], "Regulariser strengths alpha.")
flags.DEFINE_string("model", "tiny", "FP model: 'tiny' (a small CIFAR-style ResNet) or a zoo name.")
flags.DEFINE_string("dataset", "digits", "Data set.")
flags.DEFINE_string("data_dir", None, "Data folder / archive (CIFAR).")
flags.DEFINE_integer("max_train", 0, "Seeded training subset (0 = all).")
flags.DEFINE_integer("max_test", 0, "Seeded test subset (0 = all).")
flags.DEFINE_string("augment", "none", "Augmentation preset of every stage.")
flags.DEFINE_integer("epochs", 6, "BSQ search epochs.")
flags.DEFINE_integer("prun_int", 2, "Epochs between precision adjustments.")
flags.DEFINE_integer("ft_epochs", 2, "Finetune epochs with the scheme fixed.")
flags.DEFINE_integer("fp_epochs", 15, "FP training epochs.")
flags.DEFINE_integer("abits", 4, "Block activation bits of the BSQ model (0 = float).")
flags.DEFINE_float("fp_lr", 0.05, "FP training LR.")
flags.DEFINE_float("lr", 0.05, "BSQ search LR.")
flags.DEFINE_float("ft_lr", 0.01, "Finetune LR.")
flags.DEFINE_float("fp_wd", 5e-4, "FP coupled weight decay.")
flags.DEFINE_float("wd", 0.0, "Search / finetune coupled weight decay.")
flags.DEFINE_integer("batch_size", 64, "Batch size (even).")
flags.DEFINE_string("out", "runs/bsq_sweep", "Folder of the stage work_dirs.")
flags.DEFINE_string("json", None, "Write the results here.")
flags.DEFINE_string("plot", None, "Draw accuracy vs compression rate into this PNG.")

TINY_RESNET = {"family": "resnet", "input_shape": [16, 16, 1], "num_classes": 10, "stem_filters": 8,
               "stages": [{"filters": 8, "blocks": 1, "stride": 1}, {"filters": 16, "blocks": 1, "stride": 2}]}


def _run(work_dir, **config):
    """One engine run; resumed if `work_dir` holds one (a finished one returns its summary)."""
    base = {"dataset": FLAGS.dataset, "data_dir": FLAGS.data_dir, "max_train": FLAGS.max_train,
            "max_test": FLAGS.max_test, "batch_size": FLAGS.batch_size, "augment": FLAGS.augment,
            "schedule": "constant", "grad_clip": 0.0, "tensorboard": False, "verbose": 0, "seed": 0}
    resume = os.path.exists(os.path.join(work_dir, "state.json"))
    return train({**base, **config, "work_dir": work_dir, "resume": resume})


def fp_stage():
    model = TINY_RESNET if FLAGS.model == "tiny" else FLAGS.model
    if FLAGS.model == "tiny" and FLAGS.dataset != "digits":
        raise ValueError("Invalid --model=tiny: the tiny ResNet takes 16x16x1 digits; pass a zoo name.")
    work_dir = os.path.join(FLAGS.out, "fp")
    return _run(work_dir, model=model, epochs=FLAGS.fp_epochs, lr=FLAGS.fp_lr, wd=FLAGS.fp_wd), work_dir


def alpha_stage(alpha, fp_dir):
    folder = os.path.join(FLAGS.out, f"a{alpha:g}")
    search = _run(os.path.join(folder, "search"), bsq="search", init_from=os.path.join(fp_dir, "last.keras"),
                  wbits=8, abits=FLAGS.abits, epochs=FLAGS.epochs, lr=FLAGS.lr, wd=FLAGS.wd,
                  bsq_decay=alpha, bsq_prun_int=FLAGS.prun_int)
    row = {"alpha": alpha, "acc_after_bsq": 100 * search["test_acc"], "scheme": search["bsq"]["scheme"],
           "average_bits": search["bsq"]["average_bits"], "compression_rate": search["bsq"]["compression_rate"],
           "seconds": search["wall_time_s"]}
    if FLAGS.ft_epochs:
        ft = _run(os.path.join(folder, "finetune"), bsq="finetune",
                  init_from=os.path.join(folder, "search", "last.keras"), epochs=FLAGS.ft_epochs,
                  lr=FLAGS.ft_lr, wd=FLAGS.wd)
        row["acc_after_finetune"] = 100 * ft["test_acc"]
        row["seconds"] += ft["wall_time_s"]
    else:
        row["acc_after_finetune"] = row["acc_after_bsq"]
    report = _bits_plot(os.path.join(folder, "search", "last.keras"), folder, row["acc_after_finetune"])
    row["scheme"] = {layer["name"]: layer["precision"] for layer in report["layers"]}  # model order
    return row


def _bits_plot(model_path, folder, acc):
    """`<folder>/bits.json` + `bits.png`: the searched scheme (precision per layer)."""
    from quadkeras.bsq import bsq_report, save_report  # noqa: PLC0415

    report = bsq_report(keras.models.load_model(model_path), accuracy=acc)
    try:
        save_report(report, os.path.join(folder, "bits.json"), os.path.join(folder, "bits.png"))
    except ImportError:  # matplotlib missing: the JSON is enough
        save_report(report, os.path.join(folder, "bits.json"))
    return report


def table(rows, fp_summary):
    head = (f"backend {keras.backend.backend()}; {FLAGS.dataset} test set "
            f"({'all' if not FLAGS.max_test else FLAGS.max_test} images); FP {100 * fp_summary['test_acc']:.2f} %")
    lines = [head, "| alpha | acc after BSQ (%) | acc after finetune (%) | avg bits | compression | scheme |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        scheme = " ".join(str(b) for b in r.get("scheme", {}).values())
        lines.append(f"| {r['alpha']} | {r['acc_after_bsq']:.2f} | {r['acc_after_finetune']:.2f} | "
                     f"{r['average_bits']:.2f} | {32 / r['average_bits']:.1f}x | {scheme} |")
    return "\n".join(lines)


def main(argv):
    del argv
    fp_summary, fp_dir = fp_stage()
    rows = []
    for alpha in FLAGS.alphas:
        rows.append(alpha_stage(float(alpha), fp_dir))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows, fp_summary))
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, "w") as f:
            json.dump({"fp": fp_summary, "rows": rows}, f, indent=2)
    if FLAGS.plot:
        from quadkeras.report import plot_sweep, try_plot  # noqa: PLC0415

        try_plot(plot_sweep, rows, FLAGS.plot)


if __name__ == "__main__":
    app.run(main)
