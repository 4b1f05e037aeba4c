"""Can the peers express a quadratic network? A small QuadraLib `ours` net on digits.

    PYTHONPATH=$PWD bench/peers/.venv/bin/python bench/peers/quadratic_peers.py

Net: Conv2D(8) -> BN -> ReLU -> quadratic conv 16 (`ours`: BN(W_a x) * BN(W_b x) + BN(W_c x))
-> BN -> ReLU -> global average pool -> Dense(10). quadkeras has it as one `QuadConv2D`
(fused branches). Neither peer has a quadratic layer, so each peer gets the same function
composed from its own layers: three convs, three BNs, a Multiply and an Add.

All start from ONE float model: the composed net trained `--float_epochs` in Keras 3; its
weights go into quadkeras' fused `QuadConv2D` (logits checked equal), the tf_keras copy and
the HGQ2 copy; then `--qat_epochs` of QAT each, same batch order.
1. TFMOT: `quantize_model` on the quadkeras (Keras 3) model and on the composed tf_keras net
   are tried; what it refuses is printed (vs quadkeras `int8_qat` -> `litert_qat`).
2. HGQ2 (8-bit KBI, fixed widths as in `hgq2_vs_quadkeras.py`): the composed net with
   `QConv2D` branches, vs quadkeras LSQ w8a8 on `QuadConv2D`.
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
    y = QuadConv2D(16, 3, padding="same", neuron="ours", use_bias=False, bn_momentum=common.BN["momentum"],
                   bn_epsilon=common.BN["epsilon"], name="quad")(x)
    y = keras.layers.ReLU()(keras.layers.BatchNormalization(name="quad_bn")(y))
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(y))


def fit_eval(model, opt, losses, data, epochs, lr, seed):
    x, y, xt, yt = data
    common.compile_sgd(model, opt, losses, lr)
    common.train(model, x, y, epochs, 64, seed)
    return common.accuracy(common.logits(model, xt), yt)


def load_fused(composed_model, quad_model):
    """Copy the composed net's weights into the `QuadConv2D` net: branch convs a, b, c and
    their BNs concatenated on the fused output axis (layout (branches, filters), groups=1)."""
    import numpy as np

    common.copy_weights(composed_model, quad_model)
    src = common.layer_weights(composed_model)
    quad = quad_model.get_layer("quad")
    fused = {"kernel": np.concatenate([src[f"quad_{k}"]["kernel"] for k in "abc"], -1)}
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        fused[f"branch_{name}"] = np.concatenate([src[f"quad_{k}_bn"][name] for k in "abc"])
    for v in quad.weights:
        v.assign(fused[v.path.split("/")[-1]])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--float_epochs", type=int, default=4)
    p.add_argument("--qat_epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--qat_lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import keras
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from hgq.config import LayerConfigScope

    from hgq2_vs_quadkeras import hgq_bit_widths, hgq_conv_factory, init_kernel_integer_bits
    from quadkeras.export import export_model
    from quadkeras.quantize import initialize_quantizers, quantize_model, scheme_from_flags

    x, y, xt, yt, _ = common.load_arrays("digits")
    data, shape = (x, y, xt, yt), x.shape[1:]
    K3 = (keras.optimizers, keras.losses)
    rows = []

    # the shared float start: the composed net in Keras 3
    keras.utils.set_random_seed(args.seed)
    kl = keras.layers
    bn = lambda n: kl.BatchNormalization(name=n, **common.BN)  # noqa: E731
    kf = composed(kl, keras.Model, shape,
                  lambda n, f: kl.Conv2D(f, 3, padding="same", use_bias=False, name=n), bn)
    facc = fit_eval(kf, *K3, data, args.float_epochs, args.lr, args.seed)
    ref = common.logits(kf, xt)
    print(f"float composed net: acc {facc:.4f} after {args.float_epochs} epochs", flush=True)

    # quadkeras: one fused QuadConv2D, same function and weights
    for name, scheme in (("int8_qat", "int8_qat"), ("lsq w8a8", scheme_from_flags("lsq", 8, 8))):
        base = quadkeras_net(shape)
        load_fused(kf, base)
        out = common.logits(base, xt)
        diff = float(np.abs(out - ref).max())
        agree = float((out.argmax(-1) == ref.argmax(-1)).mean())
        q = quantize_model(base, scheme)
        initialize_quantizers(q, x[:64])
        acc = fit_eval(q, *K3, data, args.qat_epochs, args.qat_lr, args.seed + 1)
        row = {"name": f"quadkeras QuadConv2D {name}", "qat": acc,
               "note": f"float start vs composed: max|dlogit| {diff:.1e} "
               f"(logits up to {np.abs(ref).max():.1f}), top-1 agree {agree:.4f}"}
        if name == "int8_qat":
            rep = export_model(q, tempfile.mkdtemp(), formats=("litert_qat",), eval_data=(xt, yt),
                               eval_limit=len(xt), latency_runs=20, verbose=False)["formats"]["litert_qat"]
            row["int8"] = rep.get("accuracy", rep.get("error"))
        rows.append(row)

    # TFMOT: the quadkeras model as is, then the composed tf_keras net with the same weights
    try:
        tfmot.quantization.keras.quantize_model(quadkeras_net(shape))
        print("TFMOT quantize_model on the Keras 3 QuadConv2D model: accepted (unexpected)")
    except Exception as err:
        print(f"TFMOT quantize_model on the Keras 3 QuadConv2D model: {type(err).__name__}: "
              f"{str(err).splitlines()[0][:200]}", flush=True)
    tl = tf_keras.layers
    tk = composed(tl, tf_keras.Model, shape,
                  lambda n, f: tl.Conv2D(f, 3, padding="same", use_bias=False, name=n),
                  lambda n: tl.BatchNormalization(name=n, **common.BN))
    common.copy_weights(kf, tk)
    try:
        tq = tfmot.quantization.keras.quantize_model(tk)
        acc = fit_eval(tq, tf_keras.optimizers, tf_keras.losses, data, args.qat_epochs, args.qat_lr,
                       args.seed + 1)
        rows.append({"name": "TFMOT composed (3 Conv2D, Multiply, Add)", "qat": acc})
    except Exception as err:
        print(f"TFMOT quantize_model on the composed tf_keras net: {type(err).__name__}: "
              f"{str(err).splitlines()[0][:300]}", flush=True)
        rows.append({"name": "TFMOT composed (3 Conv2D, Multiply, Add)", "qat": None,
                     "note": f"quantize_model refused: {type(err).__name__}"})

    # HGQ2: the composed net with QConv2D branches (8-bit KBI), same weights
    try:
        with LayerConfigScope(enable_ebops=False, beta0=0.0):
            hg = composed(kl, keras.Model, shape,
                          lambda n, f: hgq_conv_factory(8)(n, f, 3, 1, "same", "block"), bn)
        common.copy_weights(kf, hg)
        init_kernel_integer_bits(hg)
        acc = fit_eval(hg, *K3, data, args.qat_epochs, args.qat_lr, args.seed + 1)
        rows.append({"name": "HGQ2 composed w8a8 (3 QConv2D, Multiply, Add)", "qat": acc,
                     "note": f"bits after training {hgq_bit_widths(hg)}"})
    except Exception as err:
        print(f"HGQ2 composed FAILED: {type(err).__name__}: {str(err).splitlines()[0][:300]}")

    print(f"\nfloat start (all rows) {facc:.4f}; QAT {args.qat_epochs} epochs")
    print(f"{'':48s} {'QAT acc':>8s} {'LiteRT int8':>11s}")
    for r in rows:
        qat = "-" if r["qat"] is None else f"{r['qat']:.4f}"
        int8 = r.get("int8", "-")
        int8 = f"{int8:.4f}" if isinstance(int8, float) else str(int8)
        print(f"{r['name']:48s} {qat:>8s} {int8:>11s}  {r.get('note', '')}", flush=True)


if __name__ == "__main__":
    main()
