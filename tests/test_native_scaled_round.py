"""LSQ's native rounding op (`fused_ops.native_scaled_round`: torch's autograd Function,
TensorFlow's `custom_gradient` op with a FakeQuant straight-through mask) against the
`keras.ops` form of `quadkeras.quantizers.ste.scaled_round`, the reference numerics: values,
d/dx and d/ds for the ranges LSQ uses and for ranges the native mask cannot take (which then
fall back to a computed mask), per tensor and per channel, with the gradient scale and the
step floor. JAX has no native op (XLA fuses the reference), so these run on torch and TF."""

import numpy as np
import pytest
import keras

from quadkeras.layers import fused_ops
from quadkeras.quantizers import ste

RNG = np.random.default_rng(3)

# (low, high): signed / unsigned b-bit LSQ ranges, a narrow one (FakeQuant's narrow_range),
# and two the native mask cannot express exactly (a computed mask then)
RANGES = [(-2.0, 1.0), (-8.0, 7.0), (0.0, 15.0), (-128.0, 127.0), (0.0, 255.0), (-7.0, 7.0),
          (-3.0, 5.0), (-1.5, 2.5)]


def _native_or_skip():
    x = keras.ops.zeros((2, 3))
    if fused_ops.native_scaled_round(x, keras.ops.ones(()), -1.0, 1.0) is None:
        pytest.skip(f"no native LSQ op on {keras.backend.backend()} (the reference runs)")


def _value_and_grads(x, s, upstream, **kwargs):
    """(out, d<out, upstream>/dx, .../ds) of `ste.scaled_round(x, s, **kwargs)`."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        xt, st = tf.constant(x), tf.constant(s)
        with tf.GradientTape() as tape:
            tape.watch([xt, st])
            out = ste.scaled_round(xt, st, **kwargs)
            loss = tf.reduce_sum(out * upstream)
        dx, ds = tape.gradient(loss, [xt, st])
        return out.numpy(), dx.numpy(), ds.numpy()
    import torch

    xt = torch.tensor(x, requires_grad=True)
    st = torch.tensor(s, requires_grad=True)
    out = ste.scaled_round(xt, st, **kwargs)
    (out * torch.tensor(upstream)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy(), st.grad.numpy()


def _inputs(low, high, per_channel):
    """x on a grid of step 0.25 (exact `x / s`): every level, the clip levels exactly, one
    ulp beyond them, halfway points and values far outside; s a power of two."""
    channels = 5
    s = np.full((channels,) if per_channel else (), 0.25, "float32")
    if per_channel:
        s[1], s[3] = 0.5, 2.0 ** -4
    levels = np.arange(low - 3, high + 3.5, 0.5, dtype="float32")
    edges = np.array([low, high], "float32")
    beyond = np.nextafter(edges, np.array([-np.inf, np.inf], "float32"))
    v = np.concatenate([levels, edges, beyond, RNG.uniform(low - 2, high + 2, 40)]).astype("float32")
    v = np.tile(v[:, None], (1, channels))
    for c in range(channels):
        RNG.shuffle(v[:, c])
    return (v * s).astype("float32"), s


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("low,high", RANGES)
def test_native_op_matches_the_keras_ops_form(monkeypatch, low, high, per_channel):
    _native_or_skip()
    x, s = _inputs(low, high, per_channel)
    upstream = RNG.standard_normal(x.shape).astype("float32")
    kwargs = dict(low=low, high=high, step_scale=0.3, floor=1e-8)
    native = _value_and_grads(x, s, upstream, **kwargs)
    monkeypatch.setattr(ste, "native_scaled_round", lambda *a, **k: None)
    reference = _value_and_grads(x, s, upstream, **kwargs)
    np.testing.assert_array_equal(native[0], reference[0])
    np.testing.assert_array_equal(native[1], reference[1])  # the straight-through mask
    # d/ds: sums of ~90 float32 terms up to |high| each, in another order
    np.testing.assert_allclose(native[2], reference[2], rtol=1e-4, atol=1e-4 * max(1.0, high))
    # and the mask is LSQ's inclusive range: on the clip levels in, one ulp beyond out
    v = x / s
    np.testing.assert_array_equal(native[1], upstream * ((v >= low) & (v <= high)))


def test_native_op_gives_no_step_gradient_below_the_floor():
    _native_or_skip()
    x, s = _inputs(-8.0, 7.0, per_channel=True)
    s[2] = 1e-9  # below the floor 1e-8: computed with the floor, no gradient to s
    upstream = RNG.standard_normal(x.shape).astype("float32")
    _, _, ds = _value_and_grads(x, s, upstream, low=-8.0, high=7.0, floor=1e-8)
    assert ds[2] == 0.0 and np.all(ds[[0, 1, 3, 4]] != 0.0)
