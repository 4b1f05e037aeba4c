"""Backend-agnostic test helpers: gradients of a layer, subprocess under another backend."""

import os
import subprocess
import sys

import numpy as np
import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def layer_grads(layer, x, upstream, training=True):
    """(output, d<out,upstream>/dx, {var path: grad}) of `layer` at input x, any backend."""
    backend = keras.backend.backend()
    if not layer.built:
        layer.build(x.shape)
    trainable = list(layer.trainable_variables)
    names = [v.path for v in trainable]
    if backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(tvals, xv):
            out, _ = layer.stateless_call(tvals, non_trainable, xv, training=training)
            return (out * upstream).sum(), out

        (_, out), (gv, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            [v.value for v in trainable], x)
        return np.asarray(out), np.asarray(gx), dict(zip(names, map(np.asarray, gv)))
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out = layer(xt, training=training)
            loss = tf.reduce_sum(out * upstream)
        grads = tape.gradient(loss, [xt] + [v.value for v in trainable])
        grads = [tf.convert_to_tensor(g).numpy() for g in grads]  # IndexedSlices from gathers
        return out.numpy(), grads[0], dict(zip(names, grads[1:]))
    import torch

    xt = torch.tensor(x, requires_grad=True)
    for v in trainable:
        v.value.grad = None
    out = layer(xt, training=training)
    (out * torch.tensor(upstream)).sum().backward()
    return (out.detach().numpy(), xt.grad.numpy(),
            {n: v.value.grad.numpy() for n, v in zip(names, trainable)})


def run_backend(backend, code, timeout=300):
    """Run python `code` in a subprocess with KERAS_BACKEND=backend; returns stdout."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise AssertionError(f"{backend} subprocess failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def assert_png(path, min_bytes=1000):
    """`path` is a written, non-empty PNG file (signature + IHDR chunk)."""
    with open(path, "rb") as f:
        head = f.read(16)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", (path, head)
    assert os.path.getsize(path) >= min_bytes, (path, os.path.getsize(path))
