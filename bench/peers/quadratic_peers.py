"""Can the peers express a quadratic network? A small QuadraLib `ours` net on digits.

    PYTHONPATH=$PWD bench/peers/.venv/bin/python bench/peers/quadratic_peers.py

Net: Conv2D(8) -> BN -> ReLU -> quadratic conv 16 (`ours`: BN(W_a x) * BN(W_b x) + BN(W_c x))
-> BN -> ReLU -> global average pool -> Dense(10). quadkeras has it as one `QuadConv2D`
(fused branches). Neither peer has a quadratic layer, so each peer gets the same function
composed from its own layers: three convs, three BNs, a Multiply and an Add.

1. TFMOT: `quantize_model` on the quadkeras (Keras 3) model is tried and its error recorded
   (TFMOT only takes tf_keras models); then the composed tf_keras net goes through
   `quantize_model` -> QAT -> `TFLiteConverter` int8, vs quadkeras `int8_qat` -> `litert_qat`.
2. HGQ2 (8-bit KBI, fixed widths as in `hgq2_vs_quadkeras.py`): the composed net trained in
   float with Keras 3 `Conv2D` branches, weights copied into `QConv2D` branches, QAT; vs
   quadkeras LSQ w8a8 on `QuadConv2D`.
Each framework: `--float_epochs` float, then `--qat_epochs` QAT from those weights, seed
`--seed` (quadkeras' fused layer and the composed nets initialise their own weights).
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def composed(layers, model_cls, shape, conv, bn):
    """The quadratic net from plain layers; `conv(name, filters)` makes a branch conv."""
    inp = layers.Input(shape)
    x = layers.ReLU()(bn("stem_bn")(layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)))
    a, b, c = (bn(f"quad_{k}_bn")(conv(f"quad_{k}", 16)(x)) for k in "abc")
    y = layers.Add(name="quad_add")([layers.Multiply(name="quad_mul")([a, b]), c])
    y = layers.GlobalAveragePooling2D()(layers.ReLU()(bn("quad_bn")(y)))
    return model_cls(inp, layers.Dense(10, name="logits")(y))


def quadkeras_net(shape):
    import keras

    from quadkeras.layers import QuadConv2D

    inp = keras.Input(shape)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="stem_bn")(
        keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)))
    y = QuadConv2D(16, 3, padding="same", neuron="ours", use_bias=False, name="quad")(x)
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(keras.layers.BatchNormalization(name="quad_bn")(y)))
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(y))


def fit_eval(model, opt, losses, data, epochs, lr, seed):
    x, y, xt, yt = data
    common.compile_sgd(model, opt, losses, lr)
    common.train(model, x, y, epochs, 64, seed)
    return common.accuracy(common.logits(model, xt), yt)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--float_epochs", type=int, default=4)
    p.add_argument("--qat_epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import keras
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from hgq.config import LayerConfigScope
    from hgq.layers import QConv2D

    from hgq2_vs_quadkeras import hgq_bit_widths, hgq_conv_factory, init_kernel_integer_bits
    from quadkeras.export import export_model
    from quadkeras.export.parity import parity_report
    from quadkeras.quantize import initialize_quantizers, quantize_model, scheme_from_flags

    x, y, xt, yt, _ = common.load_arrays("digits")
    data, shape = (x, y, xt, yt), x.shape[1:]
    K3 = (keras.optimizers, keras.losses)
    TK = (tf_keras.optimizers, tf_keras.losses)
    rows = []

    keras.utils.set_random_seed(args.seed)
    qk = quadkeras_net(shape)
    try:
        tfmot.quantization.keras.quantize_model(qk)
        print("TFMOT quantize_model on the Keras 3 QuadConv2D model: accepted (unexpected)")
    except Exception as err:
        print(f"TFMOT quantize_model on the Keras 3 QuadConv2D model: {type(err).__name__}: "
              f"{str(err).splitlines()[0][:200]}", flush=True)
    facc = fit_eval(qk, *K3, data, args.float_epochs, 0.05, args.seed)
    weights = qk.get_weights()
    for name, scheme in (("int8_qat", "int8_qat"), ("lsq w8a8", scheme_from_flags("lsq", 8, 8))):
        base = quadkeras_net(shape)
        base.set_weights(weights)
        q = quantize_model(base, scheme)
        initialize_quantizers(q, x[:64])
        acc = fit_eval(q, *K3, data, args.qat_epochs, 0.01, args.seed + 1)
        row = {"name": f"quadkeras QuadConv2D {name}", "float": facc, "qat": acc}
        if name == "int8_qat":
            rep = export_model(q, tempfile.mkdtemp(), formats=("litert_qat",), eval_data=(xt, yt),
                               eval_limit=len(xt), latency_runs=20, verbose=False)["formats"]["litert_qat"]
            row["int8"] = rep.get("accuracy", rep.get("error"))
        rows.append(row)

    tf_keras.utils.set_random_seed(args.seed)
    L = tf_keras.layers
    tk = composed(L, tf_keras.Model, shape,
                  lambda n, f: L.Conv2D(f, 3, padding="same", use_bias=False, name=n),
                  lambda n: L.BatchNormalization(name=n, **common.BN))
    facc = fit_eval(tk, *TK, data, args.float_epochs, 0.05, args.seed)
    try:
        tq = tfmot.quantization.keras.quantize_model(tk)
        acc = fit_eval(tq, *TK, data, args.qat_epochs, 0.01, args.seed + 1)
        conv = tf.lite.TFLiteConverter.from_keras_model(tq)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        content = conv.convert()
        rep = parity_report(content, common.logits(tq, xt), xt, yt, latency_runs=20)
        rows.append({"name": "TFMOT composed (3 Conv2D, Multiply, Add)", "float": facc, "qat": acc,
                     "int8": rep["accuracy"]})
    except Exception as err:
        print(f"TFMOT on the composed net FAILED: {type(err).__name__}: {str(err).splitlines()[0][:300]}")

    keras.utils.set_random_seed(args.seed)
    kl = keras.layers
    bn = lambda n: kl.BatchNormalization(name=n, **common.BN)  # noqa: E731
    kf = composed(kl, keras.Model, shape, lambda n, f: kl.Conv2D(f, 3, padding="same", use_bias=False, name=n), bn)
    facc = fit_eval(kf, *K3, data, args.float_epochs, 0.05, args.seed)
    hconv = hgq_conv_factory(8)
    try:
        with LayerConfigScope(enable_ebops=False, beta0=0.0):
            hg = composed(kl, keras.Model, shape, lambda n, f: hconv(n, f, 3, 1, "same", "block"), bn)
        common.copy_weights(kf, hg)
        init_kernel_integer_bits(hg)
        assert any(isinstance(layer, QConv2D) for layer in hg.layers)
        acc = fit_eval(hg, *K3, data, args.qat_epochs, 0.01, args.seed + 1)
        rows.append({"name": "HGQ2 composed w8a8 (3 QConv2D, Multiply, Add)", "float": facc,
                     "qat": acc, "bits": hgq_bit_widths(hg)})
    except Exception as err:
        print(f"HGQ2 composed FAILED: {type(err).__name__}: {str(err).splitlines()[0][:300]}")

    print(f"\n{'':48s} {'float':>7s} {'QAT':>7s} {'LiteRT int8':>11s}")
    for r in rows:
        int8 = r.get("int8", "-")
        int8 = f"{int8:.4f}" if isinstance(int8, float) else str(int8)
        print(f"{r['name']:48s} {r['float']:7.4f} {r['qat']:7.4f} {int8:>11s}"
              + (f"  bits {r['bits']}" if "bits" in r else ""), flush=True)


if __name__ == "__main__":
    main()
