"""LSQ low-bit fine-tune of a trained quadratic network (QuadraLib's QResNet14 by default).

Float model -> `quantize_model` with the LSQ scheme of `lsq_scheme` (kernels and conv inputs
at `--wbits` / `--abits`; quadratic-aware options: per-channel kernel steps, an 8-bit path
for the quadratic branch outputs and the branch product, stem and logits at 8 bits as is
customary in LSQ) -> LSQ data-init from one batch -> SGD fine-tune on a CPU-sized training
subset (steps initialised MSE-optimally, `quadkeras.quantize.lsq_init`, or as in the paper)
-> accuracy on the test split, before and after the fine-tune (Keras, fake-quant).

    KERAS_BACKEND=tensorflow python bench/quad_lsq.py --wbits=4 --abits=4 --train_images=4000 \
        --epochs=2 --lr=0.005 --eval_limit=10000
    # ablation: --per_channel=false, --branch_bits=0 (no branch/product quantizer), --first_last_bits=4
    # digits: --dataset=digits --model=<apps/train.py digits work_dir>/best.keras --train_images=0
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quant_common import DEFAULT_CHECKPOINT, accuracy, finetune, load_float_model  # noqa: E402


def lsq_scheme(wbits, abits, per_channel=True, branch_bits=8, first_last_bits=8, shortcut=True,
               method="lsq"):
    """The LSQ scheme dict: `wbits`/`abits` on every conv kernel/input (shortcuts too when
    `shortcut`), per-channel kernel steps, `branch_bits` signed LSQ on quadratic branch
    outputs and products (0: none), first/last layer at `first_last_bits` (0: float)."""
    kernel = f"{method}:{wbits}" + (":per_channel" if per_channel else "")
    scheme = {"kernel": kernel, "input": f"{method}:{abits}", "quantize_first_last": bool(first_last_bits),
              "quantize_shortcut": bool(shortcut), "rules": []}
    if branch_bits:
        scheme["branch"] = scheme["product"] = f"{method}:{branch_bits}:signed"
    if first_last_bits:
        scheme["rules"].append({"name": "^(stem_conv|logits)$", "input": f"{method}:{first_last_bits}",
                                "kernel": f"{method}:{first_last_bits}" + (":per_channel" if per_channel else "")})
    return scheme


def flag(text):
    return str(text).lower() in ("1", "true", "yes")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_CHECKPOINT, help=".pth (QuadraLib layout) or .keras")
    p.add_argument("--zoo", default="qresnet14")
    p.add_argument("--dataset", default="cifar10", help="cifar10 (flip augmentation) or digits (none)")
    p.add_argument("--wbits", type=int, default=4)
    p.add_argument("--abits", type=int, default=4)
    p.add_argument("--per_channel", default="true")
    p.add_argument("--branch_bits", type=int, default=8, help="0: no branch/product quantizer")
    p.add_argument("--first_last_bits", type=int, default=8, help="0: stem and logits float")
    p.add_argument("--shortcut", default="true", help="quantize the 1x1 shortcut convs")
    p.add_argument("--init", default="mse", help="mse (MSE-optimal steps on 256 training images), "
                   "mse_kernels (kernels only) or lsq (the paper's 2*mean|v|/sqrt(Q_P), activations "
                   "from the first batch)")
    p.add_argument("--train_images", type=int, default=4000, help="0: the whole training split")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--eval_limit", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_each_epoch", action="store_true", help="print the test accuracy after every epoch")
    p.add_argument("--save", default="", help="write the fine-tuned model to this .keras path")
    args = p.parse_args(argv)

    import keras
    import numpy as np

    import quadkeras  # noqa: F401 (registers layers)
    from quadkeras.export.api import dataset_arrays
    from quadkeras.quantize import initialize_quantizers, quantize_model
    from quadkeras.quantize.lsq_init import mse_init_lsq

    keras.utils.set_random_seed(args.seed)
    model = load_float_model(args.model, args.zoo)
    x_ft, y_ft = dataset_arrays(args.dataset, "train", args.train_images or None)
    x, y = dataset_arrays(args.dataset, "test", args.eval_limit)
    float_acc = accuracy(model.predict(x, batch_size=250, verbose=0), y)
    scheme = lsq_scheme(args.wbits, args.abits, flag(args.per_channel), args.branch_bits,
                        args.first_last_bits, flag(args.shortcut))
    print(f"float keras acc {float_acc:.4f} on {len(y)} test images; scheme {scheme}", flush=True)
    qmodel = quantize_model(model, scheme)
    initialize_quantizers(qmodel, x_ft[:256])
    if args.init in ("mse", "mse_kernels"):
        mse_init_lsq(qmodel, x_ft[np.random.default_rng(args.seed).permutation(len(x_ft))[:256]],
                     activations=args.init == "mse")
    start_acc = accuracy(qmodel.predict(x, batch_size=250, verbose=0), y)
    print(f"W{args.wbits}A{args.abits} after {args.init} init (no training): {start_acc:.4f}", flush=True)
    def report(epoch):
        print(f"W{args.wbits}A{args.abits} epoch {epoch}: test acc "
              f"{accuracy(qmodel.predict(x, batch_size=250, verbose=0), y):.4f}", flush=True)

    speed = finetune(qmodel, x_ft, y_ft, args.epochs, args.lr, args.batch_size, args.seed, cosine=True,
                     flip=args.dataset == "cifar10", after_epoch=report if args.eval_each_epoch else None)
    acc = accuracy(qmodel.predict(x, batch_size=250, verbose=0), y)
    print(f"W{args.wbits}A{args.abits} after fine-tune ({len(x_ft)} images x {args.epochs} epochs, "
          f"SGD lr {args.lr} cosine, {speed:.1f} img/s): {acc:.4f} (float {float_acc:.4f}, delta "
          f"{100 * (acc - float_acc):+.2f} pt)", flush=True)
    if args.save:
        qmodel.save(args.save)


if __name__ == "__main__":
    main()
