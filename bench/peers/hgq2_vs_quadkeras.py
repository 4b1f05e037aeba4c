"""ResNet-20 fixed-bit QAT: HGQ2 (Keras 3) vs quadkeras LSQ and FakeQuant, per backend.

    bash bench/peers/setup.sh      # once: bench/peers/.venv
    PYTHONPATH=$PWD bench/peers/.venv/bin/python bench/peers/hgq2_vs_quadkeras.py \
        --backend=tensorflow --data=digits --float_epochs=4 --qat_epochs=2

Protocol (one process per backend, seed `--seed`): quadkeras' `build_model("resnet20")` trains
`--float_epochs` in float; then, for each bit width in `--bits`, three QAT fine-tunes start
from those weights with the same optimizer and batch order for `--qat_epochs`:

* `quadkeras lsq`: `quantize_model(model, scheme_from_flags("lsq", b, b))` (LSQ kernel + input,
  one learned step per tensor: LSQ's default granularity);
* `quadkeras fakequant`: kernel + input `fakequant:b` (min/max fake quant; its defaults: conv
  kernels per output channel, inputs per tensor);
* `HGQ2`: the same ResNet-20 built from `hgq.layers.QConv2D` (input + kernel quantizers) with
  HGQ2's fixed-point KBI quantizers held at b bits: kernel k=1 + b-1 bits per output channel,
  integer bits trainable and initialised from the float weights; input unsigned b bits per
  tensor, integer bits tracked from the data (HGQ2's WRAP-mode tracking); EBOPs off and no
  bit-width regularizer, so HGQ2's bit-width search is off and the formats stay fixed.

In all three the stem conv, the 1x1 shortcut convs and the logits stay float ("real
shortcut", quadkeras' default). Reports test accuracy and training ms/step over FP32, all
step times measured round-robin in the same process (`common.step_times`).
"""

import argparse
import json
import os
import sys


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="tensorflow", help="tensorflow, torch or jax")
    p.add_argument("--data", default="digits", help="digits or cifar10")
    p.add_argument("--n_train", type=int, default=0)
    p.add_argument("--n_test", type=int, default=0)
    p.add_argument("--bits", default="8,4")
    p.add_argument("--float_epochs", type=int, default=4)
    p.add_argument("--qat_epochs", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--qat_lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--methods", default="lsq,fakequant,hgq2")
    p.add_argument("--jit_compile", default="auto",
                   help="model.compile's jit_compile for every model: auto (Keras: no XLA on a "
                        "CPU-only TensorFlow, always on JAX), true or false")
    p.add_argument("--json", default="")
    return p.parse_args()


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def hgq_conv_factory(bits):
    """`common.build_resnet20` conv factory: HGQ2 `QConv2D` for block convs at `bits`."""
    import keras
    from hgq.config import QuantizerConfig
    from hgq.constraints import Constant
    from hgq.layers import QConv2D

    def conv(name, filters, size, stride, padding, role):
        if role != "block":
            return keras.layers.Conv2D(filters, size, strides=stride, padding=padding, use_bias=False,
                                       name=name)
        kq = QuantizerConfig("kbi", "weight", k0=True, b0=bits - 1, i0=0, bc=Constant(bits - 1),
                             br=None, overflow_mode="SAT_SYM", heterogeneous_axis=(-1,),
                             homogeneous_axis=None)
        iq = QuantizerConfig("kbi", "datalane", k0=False, b0=bits, i0=2, bc=Constant(bits), br=None,
                             overflow_mode="WRAP", homogeneous_axis=None, heterogeneous_axis=())
        return QConv2D(filters, size, strides=stride, padding=padding, use_bias=False, kq_conf=kq,
                       iq_conf=iq, name=name)

    return conv


def build_hgq(bits, shape, classes, float_model):
    """HGQ2 ResNet-20 with `float_model`'s weights; kernel integer bits from max|w| per channel."""
    import keras
    from hgq.config import LayerConfigScope

    with LayerConfigScope(enable_ebops=False, beta0=0.0):
        model = common.build_resnet20(keras.layers, keras.Model, shape, classes,
                                      conv=hgq_conv_factory(bits))
    common.copy_weights(float_model, model)
    init_kernel_integer_bits(model)
    return model


def init_kernel_integer_bits(model):
    """Set each HGQ2 `QConv2D` kernel quantizer's integer bits to ceil(log2(max|w|)) per
    output channel (from the weights it holds), so training starts with an in-range format."""
    import keras
    import numpy as np
    from hgq.layers import QConv2D

    for layer in model.layers:
        if isinstance(layer, QConv2D):
            w = np.abs(keras.ops.convert_to_numpy(layer.kernel)).reshape(-1, layer.filters).max(0)
            i = np.ceil(np.log2(np.maximum(w, 1e-8)))
            var = layer.kq.quantizer._i
            var.assign(np.broadcast_to(i, tuple(var.shape)).astype("float32"))


def hgq_bit_widths(model):
    """Sorted distinct total bit widths (k + b) of HGQ2 kernel and input quantizers after
    training: proof that the formats stayed at the requested bits."""
    import numpy as np
    from hgq.layers import QConv2D
    from keras.ops import convert_to_numpy

    seen = {"kernel": set(), "input": set()}
    for layer in model.layers:
        if isinstance(layer, QConv2D):
            for key, q in (("kernel", layer.kq.quantizer), ("input", layer.iq.quantizer)):
                k, b = (convert_to_numpy(v).astype("float32") for v in (q.k, q.b))
                seen[key].update(np.unique(k + b).tolist())
    return {key: sorted(v) for key, v in seen.items()}


def qk_scheme(method, bits):
    from quadkeras.quantize import scheme_from_flags

    if method == "lsq":
        return scheme_from_flags("lsq", bits, bits)
    return {"kernel": f"fakequant:{bits}", "input": f"fakequant:{bits}"}


def main(args):
    import keras
    import numpy as np

    from quadkeras.models import build_model
    from quadkeras.quantize import initialize_quantizers, quantize_model

    x, y, xt, yt, classes = common.load_arrays(args.data, args.n_train, args.n_test, args.seed)
    shape = x.shape[1:]
    jit = {"jit_compile": {"true": True, "false": False}.get(args.jit_compile.lower(), "auto")}
    print(f"backend {keras.backend.backend()}, data {args.data}: train {x.shape} test {xt.shape}",
          flush=True)
    keras.utils.set_random_seed(args.seed)
    fp = build_model("resnet20", num_classes=classes, input_shape=shape)
    common.compile_sgd(fp, keras.optimizers, keras.losses, args.lr, **jit)
    common.train(fp, x, y, args.float_epochs, args.batch_size, args.seed)
    float_acc = common.accuracy(common.logits(fp, xt), yt)
    weights = fp.get_weights()
    print(f"float acc {float_acc:.4f} after {args.float_epochs} epochs", flush=True)

    results, models = [], {}
    for bits in (int(b) for b in args.bits.split(",")):
        for method in args.methods.split(","):
            name = f"{method} w{bits}a{bits}"
            try:
                if method == "hgq2":
                    model = build_hgq(bits, shape, classes, fp)
                else:
                    base = build_model("resnet20", num_classes=classes, input_shape=shape)
                    base.set_weights(weights)
                    model = quantize_model(base, qk_scheme(method, bits))
                    initialize_quantizers(model, x[:args.batch_size])
                common.compile_sgd(model, keras.optimizers, keras.losses, args.qat_lr, **jit)
                start_acc = common.accuracy(common.logits(model, xt), yt)
                seconds = common.train(model, x, y, args.qat_epochs, args.batch_size, args.seed + 1)
                acc = common.accuracy(common.logits(model, xt), yt)
            except Exception as err:  # a peer that cannot run here: record why, keep going
                print(f"{name}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:300]}", flush=True)
                results.append({"name": name, "error": f"{type(err).__name__}: {err}"[:500]})
                continue
            widths = hgq_bit_widths(model) if method == "hgq2" else None
            print(f"{name:18s} acc before QAT {start_acc:.4f} after {acc:.4f} ({seconds:.0f} s)"
                  + (f"; HGQ2 total bits after training {widths}" if widths else ""), flush=True)
            results.append({"name": name, "method": method, "bits": bits, "acc_before": start_acc,
                            "acc": acc, "train_s": seconds, "hgq2_bits": widths})
            models[name] = model

    fp_timed = build_model("resnet20", num_classes=classes, input_shape=shape)
    common.compile_sgd(fp_timed, keras.optimizers, keras.losses, args.qat_lr, **jit)
    steps = common.step_times({"fp32": fp_timed, **models}, x, y, args.batch_size, rounds=args.rounds)
    print(f"\nbackend {keras.backend.backend()}; jit_compile {args.jit_compile}; "
          f"float acc {float_acc:.4f}; QAT {args.qat_epochs} "
          f"epochs, batch {args.batch_size}; fp32 {steps['fp32']:.1f} ms/step")
    print(f"{'':18s} {'acc':>7s} {'ms/step':>8s} {'/fp32':>6s}")
    for r in results:
        if "error" in r:
            print(f"{r['name']:18s} FAILED")
            continue
        r.update(ms_step=steps[r["name"]], ratio=steps[r["name"]] / steps["fp32"])
        print(f"{r['name']:18s} {r['acc']:7.4f} {r['ms_step']:8.1f} {r['ratio']:6.2f}", flush=True)
    by_name = {r["name"]: r for r in results if "error" not in r}
    for bits in (int(b) for b in args.bits.split(",")):
        peer = by_name.get(f"hgq2 w{bits}a{bits}")
        for method in ("lsq", "fakequant"):
            ours = by_name.get(f"{method} w{bits}a{bits}")
            if peer and ours:
                gap = 100 * (ours["acc"] - peer["acc"])
                print(f"w{bits}a{bits} quadkeras {method} vs HGQ2: acc {gap:+.2f} "
                      f"points, ms/step ratio {ours['ms_step'] / peer['ms_step']:.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "float_acc": float_acc, "fp32_ms_step": steps["fp32"],
                       "rows": results}, f, indent=2)


if __name__ == "__main__":
    ARGS = parse()
    os.environ["KERAS_BACKEND"] = ARGS.backend  # before anything imports keras
    main(ARGS)
