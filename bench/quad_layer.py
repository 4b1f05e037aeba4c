"""Benchmark: QuadConv2D('ours') vs Conv2D of the same width, fwd+bwd, per backend.

Prints, measured side by side in one run (interleaved repeats, median):
  * time ratio  QuadConv2D(ours) / Conv2D   and  / (Conv2D + BN)      (target <= 3.0),
    each layer alone followed by a ReLU; and recompute=True / plain QuadConv2D (<= 1.35)
  * Conv2D(3F) / Conv2D(F): how the backend's GEMM scales with width (ideal 3.0), and
    QuadConv2D / Conv2D(3F): the cost of the per-branch BN and the product on top of it
  * activation memory of a 4-block stack, [QuadConv2D -> BN -> ReLU] x4 with and without
    recompute vs [Conv2D -> BN -> ReLU] x4 (target with recompute <= 1.3x): the bytes of
    activations saved for the backward pass (JAX `saved_residuals`, exact and repeatable),
    and XLA's compiled temp bytes of the whole fwd+bwd program (XLA-CPU's own scheduling
    can hide the saving in this second figure).

Usage:
    python bench/quad_layer.py                      # all backends, batch 128, 32x32x64
    python bench/quad_layer.py --backends torch --batch 32 --repeats 5
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _layers(kind, channels):
    import keras

    from quadkeras.layers import QuadConv2D

    if kind == "conv":
        return [keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)]
    if kind == "conv3f":  # the quad layer's own fused GEMM alone: isolates BN + product cost
        return [keras.layers.Conv2D(3 * channels, 3, padding="same", use_bias=False)]
    if kind == "conv_bn":
        return [keras.layers.Conv2D(channels, 3, padding="same", use_bias=False),
                keras.layers.BatchNormalization()]
    return [QuadConv2D(channels, 3, padding="same", use_bias=False, neuron="ours",
                       recompute=kind == "quad_recompute")]


def _stack(kind, channels, blocks, input_shape, bn_after_quad=True):
    """[layer(s) of `kind` (-> BN after a quad layer) -> ReLU] x blocks. The timing uses
    `bn_after_quad=False`: each layer alone + ReLU, so quad is not charged a BN that the
    bare Conv2D is not (the memory figure compares quad + BN with Conv2D + BN)."""
    import keras

    inputs = keras.Input(input_shape[1:])
    x = inputs
    for _ in range(blocks):
        for layer in _layers(kind, channels):
            x = layer(x)
        if kind.startswith("quad") and bn_after_quad:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x)


def _grad_fn(model, x):
    """A compiled (where the backend compiles) fwd+bwd step returning a scalar."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(xv):
            with tf.GradientTape() as tape:
                tape.watch(xv)
                loss = tf.reduce_sum(tf.square(model(xv, training=True)))
            grads = tape.gradient(loss, [xv] + model.trainable_weights)
            return tf.add_n([tf.reduce_sum(g) for g in grads])

        xt = tf.constant(x)
        return lambda: float(step(xt))
    if backend == "torch":
        import torch

        xt = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)  # on Keras' device (GPU)

        def step():
            loss = (model(xt, training=True) ** 2).sum()
            grads = torch.autograd.grad(loss, [xt] + [w.value for w in model.trainable_weights])
            return float(sum(g.sum() for g in grads))
        return step
    import jax

    fn = jax.jit(_jax_loss_grad(model))
    tv = [v.value for v in model.trainable_variables]
    nv = [v.value for v in model.non_trainable_variables]
    return lambda: float(jax.block_until_ready(fn(tv, nv, x))[0])


def _jax_loss_grad(model):
    import jax

    def loss(tv, nv, xv):
        out, _ = model.stateless_call(tv, nv, xv, training=True)
        return (out ** 2).sum()

    def loss_and_grads(tv, nv, xv):
        value, grads = jax.value_and_grad(loss, argnums=(0, 2))(tv, nv, xv)
        return value, grads
    return loss_and_grads


def run_one_backend(args):
    import numpy as np
    import keras

    keras.utils.set_random_seed(0)
    shape = (args.batch, args.size, args.size, args.channels)
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    kinds = ["conv", "conv_bn", "conv3f", "quad", "quad_recompute"]
    steps = {k: _grad_fn(_stack(k, args.channels, 1, shape, bn_after_quad=False), x) for k in kinds}
    for step in steps.values():  # warm-up / compile
        step()
        step()
    times = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:  # interleaved: noise hits every variant alike
            t0 = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t0)
    median = {k: float(np.median(v)) for k, v in times.items()}
    result = {"backend": keras.backend.backend(), "median_s": median,
              "quad_over_conv": median["quad"] / median["conv"],
              "quad_over_conv_bn": median["quad"] / median["conv_bn"],
              "conv3f_over_conv": median["conv3f"] / median["conv"],
              "quad_over_conv3f": median["quad"] / median["conv3f"],
              "recompute_over_quad": median["quad_recompute"] / median["quad"]}
    if keras.backend.backend() == "jax":
        result["memory_bytes"] = _jax_memory(args, shape)
    print("RESULT " + json.dumps(result))


def _jax_memory(args, shape):
    """Bytes of activations saved for the backward pass (JAX residuals, weights excluded),
    and XLA's compiled temp bytes for the whole fwd+bwd program."""
    import jax
    import numpy as np
    from jax._src.ad_checkpoint import saved_residuals  # public print_saved_residuals wraps it

    memory = {}
    x = np.zeros(shape, "float32")
    for kind in ("conv_bn", "quad", "quad_recompute"):
        model = _stack(kind, args.channels, args.blocks, shape)
        tv = [v.value for v in model.trainable_variables]
        nv = [v.value for v in model.non_trainable_variables]

        def loss(tv, xv, model=model, nv=nv):
            out, _ = model.stateless_call(tv, nv, xv, training=True)
            return (out ** 2).sum()

        saved = sum(int(np.prod(aval.shape)) * aval.dtype.itemsize
                    for aval, source in saved_residuals(loss, tv, x)
                    if "from the argument" not in source)
        compiled = jax.jit(_jax_loss_grad(model)).lower(tv, nv, x).compile()
        memory[kind] = {"saved": saved, "xla_temp": int(compiled.memory_analysis().temp_size_in_bytes)}
    return memory


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="tensorflow,torch,jax")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=4, help="stack depth for the memory figure")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_one_backend(args)
    print(f"batch {args.batch}, input {args.size}x{args.size}x{args.channels}, fwd+bwd, "
          f"median of {args.repeats} interleaved repeats")
    for backend in args.backends.split(","):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
               "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
        cmd = [sys.executable, __file__, "--child"] + sys.argv[1:]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            print(f"{backend}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(lines[-1][7:])
        t = r["median_s"]
        print(f"{backend:10s} conv {t['conv'] * 1e3:8.1f} ms  conv+bn {t['conv_bn'] * 1e3:8.1f} ms  "
              f"quad(ours) {t['quad'] * 1e3:8.1f} ms  ratio quad/conv {r['quad_over_conv']:.2f}  "
              f"quad/(conv+bn) {r['quad_over_conv_bn']:.2f}")
        print(f"{'':10s} Conv2D(3F) alone {t['conv3f'] * 1e3:8.1f} ms = {r['conv3f_over_conv']:.2f}x Conv2D(F); "
              f"quad / Conv2D(3F) {r['quad_over_conv3f']:.2f} (BN + product overhead)")
        print(f"{'':10s} quad(ours, recompute=True) {t['quad_recompute'] * 1e3:8.1f} ms = "
              f"{r['recompute_over_quad']:.2f}x quad (target <= 1.35)")
        if "memory_bytes" in r:
            m = r["memory_bytes"]
            for key, label in (("saved", "activations saved for backward"), ("xla_temp", "XLA temp bytes")):
                base = m["conv_bn"][key]
                print(f"{'':10s} {label}, {args.blocks}-block stack: conv+bn {base / 2**20:.1f} MiB, "
                      f"quad {m['quad'][key] / 2**20:.1f} MiB ({m['quad'][key] / base:.2f}x), "
                      f"quad+recompute {m['quad_recompute'][key] / 2**20:.1f} MiB "
                      f"({m['quad_recompute'][key] / base:.2f}x)")


if __name__ == "__main__":
    main()
