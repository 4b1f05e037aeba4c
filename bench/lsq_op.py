"""LSQ's quantize op, fused (`ste.scaled_round`, one custom-gradient op) vs autodiff through
the plain composition `round_ste(clip(x / s)) * s`: fwd+bwd time and gradient agreement,
side by side in one process (interleaved repeats, median).

    KERAS_BACKEND=tensorflow python bench/lsq_op.py     # also torch, jax
    KERAS_BACKEND=jax python bench/lsq_op.py --shape 64,32,32,16 --repeats 15
"""

import argparse
import time

import numpy as np
import keras
from keras import ops

from quadkeras.quantizers.ste import round_ste, scaled_round


def composed(x, s, low, high):
    return round_ste(ops.clip(x / s, low, high)) * s


def grad_fn(fn, x, s):
    """A no-argument callable returning (dL/dx, dL/ds) of L = sum(fn(x, s)^2), compiled
    the backend's usual way (tf.function, jax.jit, torch eager)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xv, sv = tf.Variable(x), tf.Variable(s)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(fn(tf.convert_to_tensor(xv), tf.convert_to_tensor(sv), 0.0, 15.0) ** 2)
            return tape.gradient(loss, [xv, sv])
        return step
    if backend == "torch":
        import torch

        xt, st = torch.tensor(x, requires_grad=True), torch.tensor(s, requires_grad=True)
        return lambda: torch.autograd.grad((fn(xt, st, 0.0, 15.0) ** 2).sum(), [xt, st])
    import jax

    g = jax.jit(jax.grad(lambda a, b: ops.sum(fn(a, b, 0.0, 15.0) ** 2), argnums=(0, 1)))
    xj, sj = jax.numpy.asarray(x), jax.numpy.float32(s)
    return lambda: jax.block_until_ready(g(xj, sj))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="64,32,32,16")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    x = np.random.default_rng(0).standard_normal([int(d) for d in args.shape.split(",")]).astype("float32")
    s = np.float32(0.3)
    runs = {"autodiff": grad_fn(composed, x, s), "fused": grad_fn(scaled_round, x, s)}
    grads = {k: [np.asarray(keras.ops.convert_to_numpy(g)) for g in f()] for k, f in runs.items()}
    times = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    print(f"backend={keras.backend.backend()} shape={x.shape}: autodiff {med['autodiff']:.2f} ms, "
          f"fused {med['fused']:.2f} ms, fused/autodiff {med['fused'] / med['autodiff']:.2f}x; "
          f"max |d grad x| {np.abs(grads['fused'][0] - grads['autodiff'][0]).max():.2e}, "
          f"grad s {float(grads['autodiff'][1]):.3f} vs {float(grads['fused'][1]):.3f}")


if __name__ == "__main__":
    main()
