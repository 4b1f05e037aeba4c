"""Accuracy vs average weight bits of BSQ for several alpha on digits (CPU proxy).

    KERAS_BACKEND=jax python bench/bsq_sweep.py --alphas=0.1,0.3,1 --epochs=6 --prun_int=2

Pipeline per alpha (as in the BSQ paper): FP model -> 8-bit bit representation -> BSQ
training (`--epochs`, re-quantize / adjust every `--prun_int`) -> finetune with the scheme
fixed (`--ft_epochs`). The FP model (tiny CIFAR-style ResNet, 16x16x1 digits) is trained
once (`--fp_epochs`) and cached in `--fp_cache`. Prints a markdown table and writes JSON.
"""

import json
import os
import time

import keras
from absl import app, flags

from quadkeras.bsq import BSQCallback, bsq_report, scheme_of, set_bsq_decay, to_bsq, to_representation
from quadkeras.bsq.report import accuracy
from quadkeras.bsq.training import compile_sgd, load_splits, make_datasets
from quadkeras.models import build_model

FLAGS = flags.FLAGS
flags.DEFINE_list("alphas", ["0.1", "0.3", "1.0"], "Regulariser strengths alpha.")
flags.DEFINE_integer("epochs", 6, "BSQ training epochs.")
flags.DEFINE_integer("prun_int", 2, "Epochs between precision adjustments.")
flags.DEFINE_integer("ft_epochs", 2, "Finetune epochs with the scheme fixed.")
flags.DEFINE_integer("fp_epochs", 15, "FP training epochs (if not cached).")
flags.DEFINE_float("lr", 0.05, "BSQ training LR.")
flags.DEFINE_float("ft_lr", 0.01, "Finetune LR.")
flags.DEFINE_integer("batch_size", 64, "Batch size (even).")
flags.DEFINE_string("fp_cache", "/tmp/bsq_sweep_fp.keras", "Cached FP model.")
flags.DEFINE_string("json", None, "Write the results here.")
flags.DEFINE_string("plot", None, "Draw accuracy vs compression rate into this PNG.")

TINY_RESNET = {"family": "resnet", "input_shape": [16, 16, 1], "num_classes": 10, "stem_filters": 8,
               "stages": [{"filters": 8, "blocks": 1, "stride": 1}, {"filters": 16, "blocks": 1, "stride": 2}]}


def fp_model(train):
    if os.path.exists(FLAGS.fp_cache):
        return keras.models.load_model(FLAGS.fp_cache)
    model = compile_sgd(build_model(TINY_RESNET), 0.05, weight_decay=5e-4)
    model.fit(train, epochs=FLAGS.fp_epochs, verbose=0)
    model.save(FLAGS.fp_cache)
    return model


def run_alpha(fp, alpha, train, test):
    keras.utils.set_random_seed(0)
    model = compile_sgd(to_bsq(fp, bits=8), FLAGS.lr)
    set_bsq_decay(model, alpha)
    start = time.time()
    model.fit(train, epochs=FLAGS.epochs, verbose=0, callbacks=[BSQCallback(FLAGS.prun_int)])
    searched = accuracy(model, test)
    ft = compile_sgd(to_representation(model, "float"), FLAGS.ft_lr)
    if FLAGS.ft_epochs:
        ft.fit(train, epochs=FLAGS.ft_epochs, verbose=0)
    report = bsq_report(to_representation(ft, "bits"), test)
    return {"alpha": alpha, "acc_after_bsq": searched, "acc_after_finetune": report["accuracy"],
            "average_bits": report["average_bits"], "compression_rate": report["compression_rate"],
            "scheme": scheme_of(model), "seconds": time.time() - start}


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    splits = load_splits("digits")
    train, test = make_datasets(splits, FLAGS.batch_size)
    fp = fp_model(train)
    rows = [{"alpha": "FP32", "acc_after_finetune": accuracy(fp, test), "average_bits": 32.0}]
    eight = to_bsq(fp, bits=8)
    rows.append({"alpha": "8-bit", "acc_after_finetune": accuracy(eight, test), "average_bits": 8.0})
    for alpha in FLAGS.alphas:
        rows.append(run_alpha(fp, float(alpha), train, test))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nbackend {keras.backend.backend()}; digits test set ({len(splits.y_test)} images)")
    print("| alpha | acc after BSQ (%) | acc after finetune (%) | avg bits | compression | scheme |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        scheme = " ".join(str(b) for b in r.get("scheme", {}).values())
        bsq_acc = f"{r['acc_after_bsq']:.2f}" if "acc_after_bsq" in r else "-"
        print(f"| {r['alpha']} | {bsq_acc} | {r['acc_after_finetune']:.2f} | {r['average_bits']:.2f} | "
              f"{32 / r['average_bits']:.1f}x | {scheme} |")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(rows, f, indent=2)
    if FLAGS.plot:
        from quadkeras.report import plot_sweep, try_plot  # noqa: PLC0415

        try_plot(plot_sweep, rows, FLAGS.plot)


if __name__ == "__main__":
    app.run(main)
