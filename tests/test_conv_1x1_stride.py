"""A strided 1x1 convolution (the ResNet shortcut) gets the right kernel gradient.

oneDNN's strided 1x1 NHWC backward-weights kernel writes past its workspace
(uxlfoundation/oneDNN#6035): wrong kernel gradients for in_channels < 8 on AVX2 hosts,
segfaults on AVX-512 hosts (issue #28: odd batch sizes crashed the quickstart on torch and
tensorflow). `quadkeras.layers.fused_ops.conv2d` runs such a conv as a stride-1 conv of the
subsampled input; this checks its kernel and input gradients against NumPy on the current
backend, for the shapes that were wrong on torch 2.13 here (0.1-2.5x the gradient's size).
"""

import numpy as np
import pytest
import keras

from quadkeras.layers import Conv2D


def _grads(layer, x, g):
    """(d sum(layer(x) * g) / d kernel, ... / d x) with the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        (layer(xt) * torch.tensor(g)).sum().backward()
        return layer.kernel.value.grad.numpy(), xt.grad.numpy()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(layer(xt) * g)
        gk, gx = tape.gradient(loss, [layer.kernel.value, xt])
        return gk.numpy(), gx.numpy()
    import jax

    def loss(kernel, xx):
        return (layer.stateless_call([kernel], [], xx)[0] * g).sum()

    gk, gx = jax.grad(loss, argnums=(0, 1))(layer.kernel.value, x)
    return np.asarray(gk), np.asarray(gx)


@pytest.mark.jax
@pytest.mark.parametrize("batch,channels,size,filters,padding", [
    (3, 4, 12, 8, "valid"), (2, 3, 8, 16, "same"), (16, 4, 12, 8, "valid"),
    (3, 8, 16, 16, "valid"), (1, 4, 9, 8, "same")])
def test_strided_1x1_conv_gradients(batch, channels, size, filters, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, channels)).astype("float32")
    layer = Conv2D(filters, 1, strides=2, padding=padding, use_bias=False)
    layer.build(x.shape)
    out = (size + 1) // 2
    g = rng.standard_normal((batch, out, out, filters)).astype("float32")
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    sub = x[:, ::2, ::2, :]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), sub @ kernel[0, 0],
                               rtol=1e-5, atol=1e-5)
    gk, gx = _grads(layer, x, g)
    want_gk = np.einsum("nijc,nijo->co", sub, g)[None, None]
    want_gx = np.zeros_like(x)
    want_gx[:, ::2, ::2, :] = g @ kernel[0, 0].T
    np.testing.assert_allclose(gk, want_gk, rtol=1e-4, atol=1e-4 * np.abs(want_gk).max())
    np.testing.assert_allclose(gx, want_gx, rtol=1e-4, atol=1e-5)
