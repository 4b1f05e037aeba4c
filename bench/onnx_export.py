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


def s8s8_files(report):
    """{onnx format: path} of the same LiteRT files converted as before issue 30: tf2onnx's
    signed int8 activations (S8S8), run with `session.qdqisint8allowed` (the "before" rows)."""
    from quadkeras.export import onnx_export

    litert = {"onnx_int8": "litert_int8", "onnx_qat": "litert_qat"}
    files = {}
    for name, r in report["formats"].items():
        if name in litert and "path" in r and "path" in report["formats"].get(litert[name], {}):
            with open(report["formats"][litert[name]]["path"], "rb") as f:
                content = f.read()
            files[name] = onnx_export.litert_to_onnx(content, r["path"][:-5] + "_s8s8.onnx",
                                                     unsigned=False)
    return files


def litert_agreement(report, x):
    """Top-1 agreement of each onnx_int8 / onnx_qat file with its LiteRT file on `x`."""
    from quadkeras.export import onnx_export, parity

    found = {}
    for name, litert in (("onnx_int8", "litert_int8"), ("onnx_qat", "litert_qat")):
        if "path" in report["formats"].get(name, {}) and "path" in report["formats"].get(litert, {}):
            with open(report["formats"][litert]["path"], "rb") as f:
                ref = parity.run_litert(f.read(), x)
            got = onnx_export.run_onnx(report["formats"][name]["path"], x)
            found[name] = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    return found


def interleaved_latency_ms(model, report, example, runs, rounds, before=None):
    """Batch-1 median ms/img of Keras (`predict_on_batch`) and of every exported file, timed in
    interleaved rounds (median over rounds) so that load changes hit all of them alike.
    `before`: {format: S8S8 file} timed too, as "<format> (S8S8, before)"."""
    from quadkeras.export import onnx_export, parity

    timers = {"keras": lambda: _median_ms(lambda: model.predict_on_batch(example[None]), runs)}
    for name, r in report["formats"].items():
        if "latency_ms" not in r:
            continue
        if name.startswith("onnx"):
            timers[name] = lambda path=r["path"]: onnx_export.latency_ms(path, example, runs)
        else:
            with open(r["path"], "rb") as f:
                content = f.read()
            timers[name] = lambda content=content: parity.latency_ms(content, example, runs)
    for name, path in (before or {}).items():
        timers[name + " (S8S8, before)"] = lambda path=path: onnx_export.latency_ms(
            path, example, runs, s8s8=True)
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
    p.add_argument("--quant", default="int8_qat", help="export's --quant graph for calibration")
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
    from quadkeras.export import export_model, load_model, onnx_export

    model = load_model(args.model)
    report = export_model(model, args.out_dir, formats=args.formats.split(","),
                          eval_data=args.dataset, eval_limit=args.eval_limit,
                          calibration_samples=args.calibration_samples, calibration=args.calibration,
                          ptq_graph=args.quant,
                          latency_runs=args.latency_runs, verbose=False, overwrite=True)
    x, _ = dataset_arrays(args.dataset, limit=args.eval_limit, model=model)
    agree = litert_agreement(report, x)
    before = s8s8_files(report)
    load = os.getloadavg()[0]
    latency = interleaved_latency_ms(model, report, x[0], args.latency_runs, args.rounds, before)
    keras_ms = latency["keras"]
    float_ms = latency.get("onnx")
    print(f"{report['num_eval_images']} images; Keras (predict_on_batch, batch 1): {keras_ms:.3f} "
          f"ms/img; latency: median of {args.rounds} interleaved rounds x {args.latency_runs} runs, "
          f"1 thread each; load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| format | runtime | accuracy | Keras acc | top-1 agreement | agree w/ LiteRT file | "
          "max abs dlogit | latency ms/img | vs Keras | vs onnx float | conv/dense int8 "
          "(file / run) | ops (file / run) | size KiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for name, r in report["formats"].items():
        if "max_abs_diff" not in r:
            print(f"| {name} | {r} |")
            continue
        if name in before:
            _row(f"{name} (S8S8, before)", before[name], latency, keras_ms, float_ms)
        c = r["census"]
        ran = c.get("ort_weight_ops_int8", c["weight_ops_int8"])
        vs_float = f"{float_ms / latency[name]:.2f}x" if float_ms else ""
        ops = f"{c['total_ops']} / {sum(c['ort_ops'].values())}" if "ort_ops" in c else f"{c['total_ops']}"
        share = f"{100 * agree[name]:.2f} %" if name in agree else ""
        print(f"| {name} | {r.get('runtime', 'LiteRT')} | {100 * r['accuracy']:.2f} % | "
              f"{100 * r['keras_accuracy']:.2f} % | {100 * r['top1_agreement']:.2f} % | {share} | "
              f"{r['max_abs_diff']:.3g} | {latency[name]:.3f} | {keras_ms / latency[name]:.2f}x | "
              f"{vs_float} | {c['weight_ops_int8']} / {ran} of {c['weight_ops']} | {ops} | "
              f"{r['size_bytes'] / 1024:.1f} |")
    for name, r in report["formats"].items():
        if "census" in r and "ort_ops" in r["census"]:
            print(f"census {name}: file {r['census']['ops']}; onnxruntime runs {r['census']['ort_ops']}")
    for name, path in before.items():
        c = onnx_export.onnx_census(path)
        print(f"census {name} (S8S8, before): file {c['ops']}; onnxruntime (default options) "
              f"runs {c['ort_ops']}")


def _row(name, path, latency, keras_ms, float_ms):
    ms = latency[name]
    vs_float = f"{float_ms / ms:.2f}x" if float_ms else ""
    print(f"| {name} | onnxruntime (qdqisint8allowed) | | | | | | {ms:.3f} | {keras_ms / ms:.2f}x | "
          f"{vs_float} | | | {os.path.getsize(path) / 1024:.1f} |")


if __name__ == "__main__":
    main()
