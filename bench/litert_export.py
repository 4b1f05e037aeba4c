"""Benchmark: float vs int8 LiteRT latency and size for zoo models (CIFAR-10 shapes), with parity.

Each model is (optionally) trained briefly on CIFAR-10 on CPU, exported to LiteRT float and
full-int8 PTQ, then fine-tuned with the `int8_qat` scheme and exported QAT -> int8; latency is
the median of batch-1 invocations with one interpreter thread, measured in the same run.

    KERAS_BACKEND=tensorflow python bench/litert_export.py --models=qresnet14,resnet20 \
        --train_steps=300 --qat_steps=100 --out=/tmp/litert_bench
"""

import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

from quadkeras.data import load_data, make_dataset  # noqa: E402
from quadkeras.data.prepare import input_stats  # noqa: E402
from quadkeras.export import export_model  # noqa: E402
from quadkeras.models import build_model  # noqa: E402
from quadkeras.quantize import quantize_model  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["qresnet14", "resnet20"], "Zoo model names.")
flags.DEFINE_string("dataset", "cifar10", "Dataset (train split trains/calibrates, test split compares).")
flags.DEFINE_integer("train_steps", 300, "Float training steps (0: random weights).")
flags.DEFINE_integer("qat_steps", 100, "int8_qat fine-tuning steps (0: skip the QAT export).")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_integer("bn_batches", 0, "Forward passes in training mode (BN statistics only, no "
                     "weight update) before export; lets random-weight QResNet14 give finite logits.")
flags.DEFINE_integer("eval_limit", 1000, "Test images for parity.")
flags.DEFINE_integer("latency_runs", 100, "Batch-1 invocations timed.")
flags.DEFINE_string("out", "/tmp/litert_bench", "Output folder.")


def train(model, data, steps):
    if steps <= 0:
        return model
    model.compile(keras.optimizers.Adam(1e-3, clipnorm=1.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    ds = make_dataset(data.x_train, data.y_train, FLAGS.batch_size, True,
                      *input_stats(data, model)).repeat()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=2)
    return model


def calibrate_bn(model, data, batches):
    ds = make_dataset(data.x_train, data.y_train, FLAGS.batch_size, True,
                      *input_stats(data, model))
    for images, _ in ds.take(batches):
        model(images, training=True)


def bench_model(name, data):
    model = build_model(name, num_classes=data.num_classes, input_shape=data.x_train.shape[1:])
    start = time.time()
    train(model, data, FLAGS.train_steps)
    calibrate_bn(model, data, FLAGS.bn_batches)
    train_s = time.time() - start
    kwargs = dict(representative_data=FLAGS.dataset, eval_data=FLAGS.dataset,
                  eval_limit=FLAGS.eval_limit, latency_runs=FLAGS.latency_runs)
    reports = export_model(model, os.path.join(FLAGS.out, name), formats=("litert_float", "litert_int8"),
                           overwrite=True, **kwargs)["formats"]
    if FLAGS.qat_steps > 0:
        qat = train(quantize_model(model, "int8_qat"), data, FLAGS.qat_steps)
        reports["litert_qat"] = export_model(qat, os.path.join(FLAGS.out, name + "_qat"),
                                             formats=("litert_qat",), overwrite=True, **kwargs)["formats"]["litert_qat"]
    f = reports["litert_float"]
    rows = {"model": name, "train_steps": FLAGS.train_steps, "train_s": round(train_s, 1),
            "float_ms": f["latency_ms"], "float_kib": f["size_bytes"] / 1024,
            "keras_acc": f.get("keras_accuracy")}
    for key in ("litert_int8", "litert_qat"):
        r = reports.get(key)
        if r and "latency_ms" in r:
            rows[key] = {"ms": r["latency_ms"], "kib": r["size_bytes"] / 1024,
                         "speedup": f["latency_ms"] / r["latency_ms"],
                         "smaller": f["size_bytes"] / r["size_bytes"],
                         "agree": r["top1_agreement"], "max_abs_diff": r["max_abs_diff"],
                         "acc": r.get("accuracy"), "conv_dense_int8":
                         f"{r['census']['weight_ops_int8']}/{r['census']['weight_ops']}"}
    return rows


def main(argv):
    del argv
    data = load_data(FLAGS.dataset)
    results = [bench_model(name, data) for name in FLAGS.models]
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "bench.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("| model | float ms | float KiB | mode | ms | KiB | speed-up | smaller | top-1 agree | conv/dense int8 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for key in ("litert_int8", "litert_qat"):
            if key in r:
                q = r[key]
                print(f"| {r['model']} | {r['float_ms']:.2f} | {r['float_kib']:.0f} | {key} | {q['ms']:.2f} | "
                      f"{q['kib']:.0f} | {q['speedup']:.2f}x | {q['smaller']:.2f}x | "
                      f"{100 * q['agree']:.1f}% | {q['conv_dense_int8']} |")


if __name__ == "__main__":
    app.run(main)
