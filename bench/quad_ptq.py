"""PTQ int8 of a trained quadratic network through the QAT graph, calibrated on real images.

Float model -> `quantize_model(model, "int8_qat")` (fake-quant on every conv/dense input,
kernel and output, and on quadratic layers' fused branch output and branch product) ->
`quadkeras.quantize.calibration.calibrate` (min/max, percentile or MSE ranges from training
images) -> LiteRT (`litert_qat`) -> parity on the test split. Default model: QuadraLib's
released QResNet14 imported from `../shared/data/quadralib/`.

    KERAS_BACKEND=tensorflow python bench/quad_ptq.py --methods=mse,percentile,minmax \
        --calibration_images=500 --eval_limit=10000
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DEFAULT = os.path.join(os.path.dirname(REPO), "shared", "data", "quadralib", "qresnet14_cifar10.pth")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT, help=".pth (QuadraLib layout) or .keras")
    p.add_argument("--zoo", default="qresnet14", help="zoo name of a .pth model")
    p.add_argument("--methods", default="mse,percentile,minmax")
    p.add_argument("--percentile", type=float, default=99.99)
    p.add_argument("--calibration_images", type=int, default=500)
    p.add_argument("--eval_limit", type=int, default=10000)
    p.add_argument("--out_dir", default="/tmp/quad_ptq")
    args = p.parse_args(argv)

    import keras

    import quadkeras  # noqa: F401 (registers layers)
    from quadkeras.export import export_model
    from quadkeras.data import dataset_arrays
    from quadkeras.export.parity import run_litert
    from quadkeras.interop import import_torch_checkpoint
    from quadkeras.quantize import quantize_model
    from quadkeras.quantize.calibration import calibrate

    model = (import_torch_checkpoint(args.model, args.zoo) if args.model.endswith(".pth")
             else keras.models.load_model(args.model))
    calib, _ = dataset_arrays("cifar10", "train", args.calibration_images, model=model)
    x, y = dataset_arrays("cifar10", "test", args.eval_limit, model=model)
    float_logits = model.predict(x, batch_size=250, verbose=0)
    print(f"float keras acc {(float_logits.argmax(1) == y).mean():.4f} on {len(y)} test images", flush=True)
    base = export_model(model, os.path.join(args.out_dir, "float"), formats=("litert_float",),
                        eval_data=(x[:200], y[:200]), eval_limit=200, latency_runs=30,
                        verbose=False, overwrite=True)["formats"]["litert_float"]
    print(f"LiteRT float: {base['size_bytes'] / 1024:.1f} KiB, {base['latency_ms']:.3f} ms/img", flush=True)
    for method in args.methods.split(","):
        qmodel = quantize_model(model, "int8_qat")
        calibrate(qmodel, calib, method=method, percentile=args.percentile)
        report = export_model(qmodel, os.path.join(args.out_dir, method), formats=("litert_qat",),
                              eval_data=(x, y), eval_limit=len(y), latency_runs=30, verbose=False,
                              overwrite=True)
        r = report["formats"]["litert_qat"]
        with open(os.path.join(args.out_dir, method, "model_qat.tflite"), "rb") as f:
            logits = run_litert(f.read(), x)
        c = r["census"]
        print(f"{method:>10}: LiteRT int8 acc {(logits.argmax(1) == y).mean():.4f} "
              f"(float {(float_logits.argmax(1) == y).mean():.4f}), agreement with float "
              f"{(logits.argmax(1) == float_logits.argmax(1)).mean():.4f}, with the Keras PTQ model "
              f"{r['top1_agreement']:.4f}; {r['size_bytes'] / 1024:.1f} KiB "
              f"({base['size_bytes'] / r['size_bytes']:.2f}x smaller than float), {r['latency_ms']:.3f} ms/img "
              f"({base['latency_ms'] / r['latency_ms']:.2f}x faster); conv/dense int8 "
              f"{c['weight_ops_int8']}/{c['weight_ops']}; ops: "
              + ", ".join(f"{k} x{v}" for k, v in c["ops"].items()), flush=True)


def _litert_logits(path, x):
    import numpy as np

    from quadkeras.export.parity import litert_predict

    return np.asarray(litert_predict(path, x))


if __name__ == "__main__":
    main()
