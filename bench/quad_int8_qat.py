"""QAT int8 LiteRT of a trained quadratic network with an all-int8 graph (BN folded).

Float model -> `quantize_model(model, --graph)`: by default `int8_all`, i.e.
`quadkeras.quantize.int8_graph.int8_model` (every BN folded into the layer before it, the
block BN of each quadratic conv into its branch BNs; fake-quant on every conv/dense input,
per-channel kernel, output, quadratic branch output and product, and on every residual add);
`--graph=int8_qat` the per-layer preset (block BN and residual adds float) -> calibrate the
activation ranges on training images (PTQ start) -> short QAT fine-tune on a training
subset -> LiteRT (`litert_qat`) -> accuracy on the test split, op census (int8 vs float CONV/MUL/ADD), size and latency against the float file,
both interpreters timed side by side in this one run with the same thread count.
Default model: QuadraLib's released QResNet14 imported from `../shared/data/quadralib/`.

    KERAS_BACKEND=tensorflow python bench/quad_int8_qat.py --train_images=4000 --epochs=1 \
        --lr=1e-3 --eval_limit=10000
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quant_common import DEFAULT_CHECKPOINT as DEFAULT  # noqa: E402
from quant_common import accuracy, finetune, load_float_model  # noqa: E402


def side_by_side_latency(contents, example, rounds, runs, threads):
    """{name: median ms/img}: interleaved rounds of `latency_ms` on each file, median of rounds."""
    import numpy as np

    from quadkeras.export.parity import latency_ms

    times = {name: [] for name in contents}
    for _ in range(rounds):
        for name, content in contents.items():
            times[name].append(latency_ms(content, example, runs=runs, num_threads=threads))
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT, help=".pth (QuadraLib layout) or .keras")
    p.add_argument("--zoo", default="qresnet14", help="zoo name of a .pth model")
    p.add_argument("--graph", default="int8_all", help="int8_all (BN folded, every op int8) | "
                   "int8_qat (block BN and residual adds float): quantize_model's preset")
    p.add_argument("--calibration", default="minmax", help="minmax | percentile | mse")
    p.add_argument("--calibration_images", type=int, default=500)
    p.add_argument("--train_images", type=int, default=4000, help="0: PTQ only")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--eval_limit", type=int, default=10000)
    p.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads (both files)")
    p.add_argument("--latency_rounds", type=int, default=5)
    p.add_argument("--latency_runs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out_dir", default="/tmp/quad_int8_qat")
    args = p.parse_args(argv)

    import keras
    import numpy as np

    import quadkeras  # noqa: F401 (registers layers)
    from quadkeras.export import export_model
    from quadkeras.data import dataset_arrays
    from quadkeras.export.parity import op_census, run_litert
    from quadkeras.quantize.calibration import calibrate
    from quadkeras.quantize.fold import fold_batch_norms
    from quadkeras.quantize import quantize_model
    from quadkeras.quantize.int8_graph import format_census

    keras.utils.set_random_seed(args.seed)
    model = load_float_model(args.model, args.zoo)
    train_x, train_y = dataset_arrays("cifar10", "train", args.calibration_images + args.train_images,
                                      model=model)
    order = np.random.default_rng(args.seed).permutation(len(train_x))  # the split is sorted by class
    train_x, train_y = train_x[order], train_y[order]
    calib, x_ft, y_ft = train_x[:args.calibration_images], train_x[args.calibration_images:], \
        train_y[args.calibration_images:]
    x, y = dataset_arrays("cifar10", "test", args.eval_limit, model=model)
    float_logits = model.predict(x, batch_size=250, verbose=0)
    folded_logits = fold_batch_norms(model).predict(x, batch_size=250, verbose=0)
    print(f"float keras acc {accuracy(float_logits, y):.4f} on {len(y)} test images; BN-folded "
          f"{accuracy(folded_logits, y):.4f}, max |dlogit| {abs(folded_logits - float_logits).max():.2e}",
          flush=True)

    qmodel = quantize_model(model, args.graph)
    calibrate(qmodel, calib, method=args.calibration)
    print(f"PTQ start ({args.graph}, {args.calibration}, {len(calib)} images): keras acc "
          f"{accuracy(qmodel.predict(x, batch_size=250, verbose=0), y):.4f}", flush=True)
    if args.train_images:
        speed = finetune(qmodel, x_ft, y_ft, args.epochs, args.lr, args.batch_size, args.seed)
        print(f"QAT fine-tune: {len(x_ft)} images x {args.epochs} epochs, lr {args.lr}, "
              f"{speed:.1f} img/s", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    export_model(model, os.path.join(args.out_dir, "float"), formats=("litert_float",),
                 eval_data=(x[:100], y[:100]), eval_limit=100, latency_runs=3, verbose=False,
                 overwrite=True)
    report = export_model(qmodel, os.path.join(args.out_dir, "qat"), formats=("litert_qat",),
                          eval_data=(x, y), eval_limit=len(y), latency_runs=3, verbose=False,
                          overwrite=True)
    files = {"float": os.path.join(args.out_dir, "float", "model_float.tflite"),
             "int8": os.path.join(args.out_dir, "qat", "model_qat.tflite")}
    contents = {k: open(v, "rb").read() for k, v in files.items()}
    logits = run_litert(contents["int8"], x)
    lat = side_by_side_latency(contents, x[0], args.latency_rounds, args.latency_runs, args.threads)
    r = report["formats"]["litert_qat"]
    census = op_census(contents["int8"])
    size_f, size_q = len(contents["float"]), len(contents["int8"])
    print(f"LiteRT int8 acc {accuracy(logits, y):.4f} (float {accuracy(float_logits, y):.4f}, "
          f"delta {100 * (accuracy(logits, y) - accuracy(float_logits, y)):+.2f} pt); agreement with "
          f"float {(logits.argmax(1) == float_logits.argmax(1)).mean():.4f}, with the Keras QAT model "
          f"{r['top1_agreement']:.4f}", flush=True)
    print(f"size {size_q / 1024:.1f} KiB vs float {size_f / 1024:.1f} KiB ({size_f / size_q:.2f}x smaller); "
          f"latency ({args.threads} thread(s), median of {args.latency_rounds} interleaved rounds x "
          f"{args.latency_runs}) int8 {lat['int8']:.3f} ms vs float {lat['float']:.3f} ms "
          f"({lat['float'] / lat['int8']:.2f}x faster)", flush=True)
    print(f"census: {format_census(census)}; all ops: "
          + ", ".join(f"{k} x{v}" for k, v in census["ops"].items()), flush=True)


if __name__ == "__main__":
    main()
