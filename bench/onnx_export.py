"""ONNX (onnxruntime) vs LiteRT vs Keras on a trained model: accuracy, agreement, latency.

Exports `--formats` with `quadkeras.export.export_model` (parity on `--eval_limit` seeded test
images), then times Keras (`predict_on_batch`) and every exported file at batch 1 in
interleaved rounds in the same process, so the latency ratios are measured side by side. The
model: a .keras file (any backend may have written it), e.g. QuadraLib's QResNet14 converted
with `apps/convert.py`.

    KERAS_BACKEND=torch python apps/convert.py --from_torch=../shared/data/quadralib/qresnet14_cifar10.pth \
        --model=qresnet14 --out=/tmp/q14.keras
    KERAS_BACKEND=tensorflow python bench/onnx_export.py --model=/tmp/q14.keras --dataset=cifar10 \
        --eval_limit=1000 --calibration=mse
"""

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def interleaved_latency_ms(model, report, example, runs, rounds):
    """Batch-1 median ms/img of Keras (`predict_on_batch`) and of every exported file, timed in
    interleaved rounds (median over rounds) so that load changes hit all of them alike."""
    from quadkeras.export import onnx_export, parity

    timers = {"keras": lambda: _median_ms(lambda: model.predict_on_batch(example[None]), runs)}
    for name, r in report["formats"].items():
        if "latency_ms" not in r:
            continue
        if name.startswith("onnx"):
            timers[name] = lambda path=r["path"]: onnx_export.latency_ms(path, example, runs)
            if name != "onnx":  # the same QDQ file with onnxruntime's default options (unfused)
                timers[name + " (ORT default)"] = lambda path=r["path"]: onnx_export.latency_ms(
                    path, example, runs, s8s8=False)
        else:
            with open(r["path"], "rb") as f:
                content = f.read()
            timers[name] = lambda content=content: parity.latency_ms(content, example, runs)
    samples = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            samples[name].append(timer())
    return {name: float(np.median(v)) for name, v in samples.items()}


def _median_ms(fn, runs, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help=".keras file")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--formats", default="litert_float,onnx,litert_int8,onnx_int8")
    p.add_argument("--calibration", default="mse")
    p.add_argument("--calibration_samples", type=int, default=500)
    p.add_argument("--eval_limit", type=int, default=1000)
    p.add_argument("--latency_runs", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    p.add_argument("--out_dir", default="/tmp/onnx_export_bench")
    args = p.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # Keras timed on 1 thread, like the files
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import quadkeras  # noqa: F401 (registers layers)
    from quadkeras.data import dataset_arrays
    from quadkeras.export import export_model, load_model

    model = load_model(args.model)
    report = export_model(model, args.out_dir, formats=args.formats.split(","),
                          eval_data=args.dataset, eval_limit=args.eval_limit,
                          calibration_samples=args.calibration_samples, calibration=args.calibration,
                          latency_runs=args.latency_runs, verbose=False, overwrite=True)
    x, _ = dataset_arrays(args.dataset, limit=1, model=model)
    load = os.getloadavg()[0]
    latency = interleaved_latency_ms(model, report, x[0], args.latency_runs, args.rounds)
    keras_ms = latency["keras"]
    print(f"{report['num_eval_images']} images; Keras (predict_on_batch, batch 1): {keras_ms:.3f} "
          f"ms/img; latency: median of {args.rounds} interleaved rounds x {args.latency_runs} runs, "
          f"1 thread each; load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| format | runtime | accuracy | Keras acc | top-1 agreement | max abs dlogit | "
          "latency ms/img | vs Keras | conv/dense int8 (file / run) | size KiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for name, r in report["formats"].items():
        if name + " (ORT default)" in latency:
            print(f"| {name} (ORT default: not fused) | | | | | | {latency[name + ' (ORT default)']:.3f} | "
                  f"{keras_ms / latency[name + ' (ORT default)']:.2f}x | | |")
        if "max_abs_diff" not in r:
            print(f"| {name} | {r} |")
            continue
        c = r["census"]
        runtime = r.get("runtime", "LiteRT")
        ran = c.get("ort_weight_ops_int8", c["weight_ops_int8"])
        print(f"| {name} | {runtime} | {100 * r['accuracy']:.2f} % | {100 * r['keras_accuracy']:.2f} % | "
              f"{100 * r['top1_agreement']:.2f} % | {r['max_abs_diff']:.3g} | {latency[name]:.3f} | "
              f"{keras_ms / latency[name]:.2f}x | {c['weight_ops_int8']} / {ran} of {c['weight_ops']} | "
              f"{r['size_bytes'] / 1024:.1f} |")


if __name__ == "__main__":
    main()
