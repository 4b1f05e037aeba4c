"""ResNet-20 int8 QAT -> LiteRT int8: TFMOT (tf_keras, Keras 2) vs quadkeras `int8_qat` (Keras 3).

    bash bench/peers/setup.sh      # once: bench/peers/.venv
    PYTHONPATH=$PWD bench/peers/.venv/bin/python bench/peers/tfmot_vs_quadkeras.py \
        --data=digits --float_epochs=4 --qat_epochs=2

Protocol (one process, TensorFlow backend, seed `--seed`):
1. quadkeras' `build_model("resnet20")` trains `--float_epochs` in float (Keras 3, SGD).
2. The same architecture written in tf_keras (`common.build_resnet20`) receives those weights
   (logits checked equal), so both QAT runs start from the identical float model.
3. TFMOT: `tfmot.quantization.keras.quantize_model` (default 8-bit scheme, BN folding, fake
   quant everywhere) -> `--qat_epochs`; quadkeras: `quantize_model(model, "int8_qat")` ->
   `--qat_epochs`; same optimizer, learning rate, batch order.
4. LiteRT: TFMOT's model through `TFLiteConverter.from_keras_model` + `Optimize.DEFAULT`;
   quadkeras' through `export_model(..., formats=("litert_qat",))` (the same converter, from a
   SavedModel). Both files go through `quadkeras.export.parity.parity_report`: the same
   `ai_edge_litert` interpreter, threads and latency loop.
5. Train step time: float tf_keras, TFMOT QAT, float Keras 3 and quadkeras QAT, interleaved.
"""

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras -> tf_keras, as TFMOT requires
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="digits", help="digits or cifar10")
    p.add_argument("--n_train", type=int, default=0, help="seeded train subset (0: all)")
    p.add_argument("--n_test", type=int, default=0, help="seeded test subset (0: all)")
    p.add_argument("--float_epochs", type=int, default=4)
    p.add_argument("--qat_epochs", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05, help="float training learning rate")
    p.add_argument("--qat_lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads")
    p.add_argument("--latency_runs", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5, help="step-time rounds (each model, interleaved)")
    p.add_argument("--presets", default="int8_qat,int8_qat_fold_bn,int8_all",
                   help="quadkeras QAT presets to compare (int8_qat is the issue's; the others "
                        "fold BN / quantize every op, as TFMOT does)")
    p.add_argument("--json", default="", help="also write the results here")
    return p.parse_args()


def tfmot_litert(model):
    """TFMOT's documented QAT -> int8 path: from_keras_model + Optimize.DEFAULT."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def row(name, keras_acc, rep, float_logits, litert_logits):
    """One result line: Keras (QAT) accuracy, LiteRT int8 accuracy, agreements, size, latency."""
    return {"name": name, "keras_qat_acc": keras_acc, "int8_acc": rep["accuracy"],
            "agree_int8_vs_qat": rep["top1_agreement"],
            "agree_int8_vs_float": float((litert_logits.argmax(-1) == float_logits.argmax(-1)).mean()),
            "size_kib": rep["size_bytes"] / 1024, "latency_ms": rep["latency_ms"],
            "int8_weight_ops": f"{rep['census']['weight_ops_int8']}/{rep['census']['weight_ops']}",
            "ops": rep["census"]["total_ops"]}


def main():
    args = parse()
    import keras
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from quadkeras.export import export_model
    from quadkeras.export.parity import parity_report, run_litert
    from quadkeras.models import build_model
    from quadkeras.quantize import initialize_quantizers, quantize_model

    x, y, xt, yt, classes = common.load_arrays(args.data, args.n_train, args.n_test, args.seed)
    shape = x.shape[1:]
    print(f"data {args.data}: train {x.shape} test {xt.shape}", flush=True)

    # 1. shared float model (Keras 3, quadkeras zoo)
    keras.utils.set_random_seed(args.seed)
    qk_float = build_model("resnet20", num_classes=classes, input_shape=shape)
    common.compile_sgd(qk_float, keras.optimizers, keras.losses, args.lr)
    common.train(qk_float, x, y, args.float_epochs, args.batch_size, args.seed)
    float_logits = common.logits(qk_float, xt)
    float_acc = common.accuracy(float_logits, yt)
    float_weights = qk_float.get_weights()

    # 2. the same network in tf_keras, same weights
    tf_keras.utils.set_random_seed(args.seed)
    tk_float = common.build_resnet20(tf_keras.layers, tf_keras.Model, shape, classes)
    copied = common.copy_weights(qk_float, tk_float)
    tk_logits = common.logits(tk_float, xt)
    print(f"float ResNet-20: params quadkeras {qk_float.count_params()} tf_keras {tk_float.count_params()}, "
          f"{copied} tensors copied, max|dlogit| {np.abs(tk_logits - float_logits).max():.2e}, "
          f"float acc {float_acc:.4f}", flush=True)

    # 3. QAT fine-tunes from the same float weights
    tk_qat = tfmot.quantization.keras.quantize_model(tk_float)
    common.compile_sgd(tk_qat, tf_keras.optimizers, tf_keras.losses, args.qat_lr)
    t_tfmot = common.train(tk_qat, x, y, args.qat_epochs, args.batch_size, args.seed + 1)
    tfmot_logits = common.logits(tk_qat, xt)

    qk_qats = {}
    for preset in args.presets.split(","):
        qk_base = build_model("resnet20", num_classes=classes, input_shape=shape)
        qk_base.set_weights(float_weights)
        qk_qat = quantize_model(qk_base, preset)
        initialize_quantizers(qk_qat, x[:args.batch_size])
        common.compile_sgd(qk_qat, keras.optimizers, keras.losses, args.qat_lr)
        seconds = common.train(qk_qat, x, y, args.qat_epochs, args.batch_size, args.seed + 1)
        qk_qats[preset] = (qk_qat, seconds, common.logits(qk_qat, xt))

    # 4. LiteRT int8, same interpreter / threads / latency loop
    content = tfmot_litert(tk_qat)
    tf_rep = parity_report(content, tfmot_logits, xt, yt, latency_runs=args.latency_runs,
                           num_threads=args.threads)
    tf_row = row("TFMOT quantize_model", common.accuracy(tfmot_logits, yt), tf_rep, float_logits,
                 run_litert(content, xt, num_threads=args.threads))
    qk_rows = []
    for preset, (qk_qat, seconds, qk_logits) in qk_qats.items():
        rep = export_model(qk_qat, tempfile.mkdtemp(prefix="peers_qk_"), formats=("litert_qat",),
                           eval_data=(xt, yt), eval_limit=len(xt), latency_runs=args.latency_runs,
                           num_threads=args.threads, verbose=False)["formats"]["litert_qat"]
        if "error" in rep:
            print(f"quadkeras {preset}: litert_qat export FAILED: {rep['error']}", flush=True)
            continue
        with open(rep["path"], "rb") as f:
            qk_rows.append(row(f"quadkeras {preset}", common.accuracy(qk_logits, yt), rep,
                               float_logits, run_litert(f.read(), xt, num_threads=args.threads)))
        qk_rows[-1].update(preset=preset, qat_train_s=seconds)

    # 5. step times, interleaved (fresh float models compiled like the QAT ones)
    tk_fp = common.build_resnet20(tf_keras.layers, tf_keras.Model, shape, classes)
    common.compile_sgd(tk_fp, tf_keras.optimizers, tf_keras.losses, args.qat_lr)
    qk_fp = build_model("resnet20", num_classes=classes, input_shape=shape)
    common.compile_sgd(qk_fp, keras.optimizers, keras.losses, args.qat_lr)
    timed = {"tf_keras fp32": tk_fp, "TFMOT qat": tk_qat, "keras3 fp32": qk_fp}
    timed.update({f"quadkeras {p}": m for p, (m, _, _) in qk_qats.items()})
    steps = common.step_times(timed, x, y, args.batch_size, rounds=args.rounds)

    tf_row.update(ms_step=steps["TFMOT qat"], fp32_ms_step=steps["tf_keras fp32"],
                  qat_train_s=t_tfmot)
    for r in qk_rows:
        r.update(ms_step=steps[r["name"]], fp32_ms_step=steps["keras3 fp32"])
    print(f"\nfloat acc {float_acc:.4f} ({args.float_epochs} epochs); QAT {args.qat_epochs} epochs; "
          f"batch {args.batch_size}; LiteRT threads {args.threads}", flush=True)
    print(f"{'':28s} {'qat acc':>8s} {'int8 acc':>8s} {'agr/qat':>8s} {'agr/fp':>8s} {'KiB':>7s} "
          f"{'lat ms':>7s} {'int8 w':>6s} {'ops':>4s} {'ms/step':>8s} {'fp32':>7s} {'ratio':>6s}")
    for r in [tf_row] + qk_rows:
        print(f"{r['name']:28s} {r['keras_qat_acc']:8.4f} {r['int8_acc']:8.4f} "
              f"{r['agree_int8_vs_qat']:8.4f} {r['agree_int8_vs_float']:8.4f} {r['size_kib']:7.1f} "
              f"{r['latency_ms']:7.3f} {r['int8_weight_ops']:>6s} {r['ops']:4d} {r['ms_step']:8.1f} "
              f"{r['fp32_ms_step']:7.1f} {r['ms_step'] / r['fp32_ms_step']:6.2f}", flush=True)
    for r in qk_rows:
        print(f"{r['name']} / TFMOT: QAT ms/step {r['ms_step'] / tf_row['ms_step']:.2f}, "
              f"LiteRT latency {r['latency_ms'] / tf_row['latency_ms']:.2f}, "
              f"size {r['size_kib'] / tf_row['size_kib']:.2f}, "
              f"int8 acc {100 * (r['int8_acc'] - tf_row['int8_acc']):+.2f} points", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "float_acc": float_acc, "rows": [tf_row] + qk_rows}, f, indent=2)


if __name__ == "__main__":
    main()
