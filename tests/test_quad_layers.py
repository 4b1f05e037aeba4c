"""Quadratic layers against the independent NumPy reference: values and gradients."""

import numpy as np
import pytest
import keras

from quadkeras.layers import BatchNormalization, Conv2D, QuadConv2D, QuadDense, QuadDepthwiseConv2D
from tests import reference as ref
from tests.backend_utils import layer_grads

RNG = np.random.default_rng(0)


def _patches(x, kernel_size, strides, padding):
    """(kh, kw, c)-ordered input patches, by explicit slicing (independent of the layer)."""
    kh, kw = kernel_size
    if not isinstance(padding, str):
        x = np.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    elif padding == "same":
        probe = ref.conv2d(x[..., :1], np.zeros((kh, kw, 1, 1)), strides, "same")
        out_h, out_w = probe.shape[1:3]
        pad_h = max((out_h - 1) * strides[0] + kh - x.shape[1], 0)
        pad_w = max((out_w - 1) * strides[1] + kw - x.shape[2], 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out_h = (x.shape[1] - kh) // strides[0] + 1
    out_w = (x.shape[2] - kw) // strides[1] + 1
    cols = [x[:, i:i + strides[0] * (out_h - 1) + 1:strides[0], j:j + strides[1] * (out_w - 1) + 1:strides[1], :]
            for i in range(kh) for j in range(kw)]
    return np.stack(cols, axis=-2).reshape(x.shape[0], out_h, out_w, -1)


def _weights(layer):
    return {v.path.split("/")[-1]: np.asarray(keras.ops.convert_to_numpy(v), "float64")
            for v in layer.weights}


def _reference_fn(layer, training):
    """f(x, weights) -> reference output for this layer's settings."""
    if isinstance(layer, QuadConv2D):
        def linear(x, k):
            return ref.conv2d(x, k, layer.strides, layer.padding, layer.dilation_rate, layer.groups)
        groups, out_groups = layer.groups, layer.groups
        patches = lambda x: _patches(x, layer.kernel_size, layer.strides, layer.padding)  # noqa: E731
    elif isinstance(layer, QuadDepthwiseConv2D):
        def linear(x, k):
            return ref.depthwise(x, k, layer.strides, layer.padding)
        groups, out_groups, patches = 1, layer._channels, None
    else:
        linear, groups, out_groups, patches = (lambda x, k: x @ k), 1, 1, (lambda x: x)

    def f(x, weights):
        weights = {**weights, "patches": patches, "out_groups": out_groups}
        return ref.quad_reference(layer.neuron, x, weights, linear, groups, training, layer.bn_epsilon)
    return f


def _case(jax=False, **kwargs):
    """A conv case; `jax=True` also runs it in the (slower per op) JAX process."""
    name = "-".join(f"{k}={v}" for k, v in kwargs.items())
    return pytest.param(kwargs, id=name, marks=[pytest.mark.jax] if jax else [])


CONV_CASES = [
    _case(jax=n in ("ours", "t1"), neuron=n, strides=2, padding="same")
    for n in ("ours", "t1", "t2", "t3", "t4", "t2_4")
] + [
    _case(jax=True, neuron="ours", groups=2, padding="same"),
    _case(neuron="t2_4", groups=2, padding="valid", use_bias=True),
    _case(neuron="t4", dilation_rate=2, padding="valid", use_bias=False),
    _case(jax=True, neuron="ours", strides=2, padding=1),  # PyTorch's stride-2 padding=1
    _case(neuron="t1", strides=2, padding=((1, 2), (0, 1))),
    _case(neuron="t2_4", groups=2, padding=(2, 1), use_bias=True),
]


def _make_and_check(layer, x, training):
    upstream = RNG.standard_normal(keras.ops.convert_to_numpy(layer(x, training=False)).shape).astype("float32")
    f = _reference_fn(layer, training)
    if layer.neuron == "ours":  # non-trivial BN statistics and affine
        for name, low in (("branch_gamma", 0.5), ("branch_beta", -0.5), ("branch_moving_mean", -0.5),
                          ("branch_moving_variance", 0.5)):
            var = getattr(layer, name)
            var.assign(RNG.uniform(low, low + 1.0, var.shape).astype("float32"))
    if layer.use_bias:
        layer.bias.assign(RNG.uniform(-0.5, 0.5, layer.bias.shape).astype("float32"))
    weights = _weights(layer)
    moving = {k: v.copy() for k, v in weights.items() if "moving" in k}
    out, gx, gvars = layer_grads(layer, x, upstream, training=training)
    expected = f(x.astype("float64"), weights)
    scale = np.abs(expected).max() + 1e-6
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * scale)

    def loss(xv, w):
        return float((f(xv, w) * upstream).sum())

    eps = 1e-4
    d = RNG.standard_normal(x.shape)
    numeric = (loss(x + eps * d, weights) - loss(x - eps * d, weights)) / (2 * eps)
    np.testing.assert_allclose((gx * d).sum(), numeric, rtol=2e-3, atol=1e-3)
    for path, grad in gvars.items():
        name = path.split("/")[-1]
        d = RNG.standard_normal(grad.shape)
        plus = {**weights, name: weights[name] + eps * d}
        minus = {**weights, name: weights[name] - eps * d}
        numeric = (loss(x, plus) - loss(x, minus)) / (2 * eps)
        np.testing.assert_allclose((grad * d).sum(), numeric, rtol=2e-3, atol=1e-3, err_msg=name)
    return moving


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("training", [False, True])
def test_quad_conv_matches_reference(case, training):
    if training and case["neuron"] != "ours":
        pytest.skip("training only changes the `ours` neuron (batch statistics)")
    layer = QuadConv2D(4, 3, **case)
    x = RNG.uniform(-1, 1, (2, 7, 7, 4)).astype("float32")
    _make_and_check(layer, x, training)


@pytest.mark.parametrize("neuron", [pytest.param(n, marks=[pytest.mark.jax] if n in ("ours", "t2_4") else [])
                                    for n in ("ours", "t1", "t2", "t3", "t4", "t2_4")])
def test_quad_dense_matches_reference(neuron):
    layer = QuadDense(5, neuron=neuron)
    x = RNG.uniform(-1, 1, (6, 7)).astype("float32")
    _make_and_check(layer, x, training=neuron == "ours")


@pytest.mark.parametrize("neuron, padding, strides", [("ours", "same", 1), ("t2_4", "same", 1),
                                                      ("t3", "same", 1), ("ours", 1, 2)])
def test_quad_depthwise_matches_reference(neuron, padding, strides):
    layer = QuadDepthwiseConv2D(3, strides=strides, depth_multiplier=2, padding=padding, neuron=neuron)
    x = RNG.uniform(-1, 1, (2, 6, 6, 3)).astype("float32")
    _make_and_check(layer, x, training=False)


def test_t4_dense_gradient_matches_spec_formulas():
    """QuadraLib hybrid BP: dX = (g*WaX)Wb^T + (g*WbX)Wa^T, dWa = X^T(g*WbX), dWb = X^T(g*WaX)."""
    layer = QuadDense(3, neuron="t4", use_bias=False)
    x = RNG.standard_normal((4, 5)).astype("float32")
    g = RNG.standard_normal((4, 3)).astype("float32")
    layer.build(x.shape)
    _, gx, gvars = layer_grads(layer, x, g)
    wa, wb = np.split(keras.ops.convert_to_numpy(layer.kernel), 2, axis=-1)
    a, b = x @ wa, x @ wb
    np.testing.assert_allclose(gx, (g * b) @ wa.T + (g * a) @ wb.T, rtol=1e-4, atol=1e-5)
    dk = np.concatenate([x.T @ (g * b), x.T @ (g * a)], axis=-1)
    np.testing.assert_allclose(gvars[layer.kernel.path], dk, rtol=1e-4, atol=1e-5)


@pytest.mark.jax
def test_branch_moving_statistics_update():
    layer = QuadConv2D(2, 1, neuron="ours", use_bias=False, bn_momentum=0.9)
    x = RNG.standard_normal((8, 4, 4, 3)).astype("float32")
    layer(x, training=True)
    z = x.reshape(-1, 3) @ keras.ops.convert_to_numpy(layer.kernel).reshape(3, 6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.branch_moving_mean), 0.1 * z.mean(0),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.branch_moving_variance),
                               0.9 + 0.1 * z.var(0), rtol=1e-4, atol=1e-6)


@pytest.mark.jax
@pytest.mark.parametrize("neuron", ["ours", "t4"])
def test_recompute_gives_identical_values_and_gradients(neuron):
    x = RNG.uniform(-1, 1, (2, 6, 6, 3)).astype("float32")
    g = RNG.standard_normal((2, 6, 6, 4)).astype("float32")
    plain = QuadConv2D(4, 3, padding="same", neuron=neuron)
    lean = QuadConv2D(4, 3, padding="same", neuron=neuron, recompute=True)
    plain.build(x.shape)
    lean.build(x.shape)
    lean.set_weights(plain.get_weights())
    out_a, gx_a, gv_a = layer_grads(plain, x, g)
    out_b, gx_b, gv_b = layer_grads(lean, x, g)
    np.testing.assert_allclose(out_a, out_b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_a, gx_b, rtol=1e-4, atol=1e-5)
    for (_, a), (_, b) in zip(sorted(gv_a.items()), sorted(gv_b.items())):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(plain.non_trainable_weights, lean.non_trainable_weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-5)


def test_folded_kernel_reproduces_inference_output():
    layer = QuadConv2D(3, 3, padding="same", neuron="ours", use_bias=True)
    x = RNG.uniform(-1, 1, (2, 5, 5, 2)).astype("float32")
    layer(x, training=True)  # moves the statistics away from (0, 1)
    kernel, bias = layer.folded_kernel_and_bias()
    z = ref.conv2d(x.astype("float64"), kernel, padding="same") + bias
    a, b, c = ref.split_fused(z, 1, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), a * b + c,
                               rtol=1e-4, atol=1e-4)


def test_output_shape_and_compute_output_shape_agree():
    for layer, shape in [
        (QuadConv2D(6, 3, strides=2, padding="valid", neuron="t4"), (1, 9, 9, 4)),
        (QuadDepthwiseConv2D(3, depth_multiplier=3, strides=2, padding="same"), (1, 9, 9, 4)),
        (QuadDense(7, neuron="t2_4"), (2, 3, 4)),
    ]:
        out = layer(np.zeros(shape, "float32"))
        assert tuple(out.shape) == tuple(layer.compute_output_shape(shape))


def test_t1_warns_when_huge():
    with pytest.warns(UserWarning, match="bilinear parameters"):
        QuadConv2D(64, 3, neuron="t1").build((None, 8, 8, 64))


@pytest.mark.jax
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 5, 5, 6), (9, 6)])
def test_fused_batch_norm_matches_keras(shape, training):
    """quadkeras' BatchNormalization (native fused kernel on torch / TF) == Keras' layer."""
    x = RNG.uniform(-1, 2, shape).astype("float32")
    upstream = RNG.standard_normal(shape).astype("float32")
    layers = [BatchNormalization(momentum=0.9, epsilon=1e-5),
              keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)]
    init = [RNG.uniform(0.5, 1.5, shape[-1]).astype("float32") for _ in range(4)]
    results = []
    for layer in layers:
        layer.build(shape)
        for var, value in zip((layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance), init):
            var.assign(value)
        out, gx, gv = layer_grads(layer, x, upstream, training=training)
        moving = [keras.ops.convert_to_numpy(v) for v in layer.non_trainable_weights]
        results.append((out, gx, sorted(gv.items()), moving))
    (out_a, gx_a, gv_a, mv_a), (out_b, gx_b, gv_b, mv_b) = results
    np.testing.assert_allclose(out_a, out_b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_a, gx_b, rtol=1e-4, atol=1e-5)
    for (_, a), (_, b) in zip(gv_a, gv_b):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if keras.backend.backend() != "jax":  # stateless_call in layer_grads leaves jax variables alone
        for a, b in zip(mv_a, mv_b):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.jax
def test_moving_statistics_inside_a_stateless_scope_are_recorded_not_written():
    """In a `StatelessScope` the moving-statistics update goes to the scope (torch's in-place
    fast path must not write the variable); outside it, the variable moves."""
    x = RNG.uniform(-1, 2, (6, 3, 3, 4)).astype("float32")
    mean = x.reshape(-1, 4).mean(0)
    for layer, moving in ((BatchNormalization(momentum=0.9), "moving_mean"),
                          (QuadConv2D(2, 1, use_bias=False, bn_momentum=0.9), "branch_moving_mean")):
        layer.build(x.shape)
        variable = getattr(layer, moving)
        with keras.StatelessScope() as scope:
            layer(x, training=True)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), 0.0)
        recorded = keras.ops.convert_to_numpy(scope.get_current_value(variable))
        layer(x, training=True)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), recorded, rtol=1e-6, atol=1e-7)
        if moving == "moving_mean":
            np.testing.assert_allclose(recorded, 0.1 * mean, rtol=1e-5, atol=1e-6)


@pytest.mark.jax
def test_ours_moving_statistics_follow_batch_statistics():
    """Training `ours` moves the per-branch statistics towards the biased batch moments."""
    layer = QuadConv2D(3, 3, padding=1, strides=2, neuron="ours", use_bias=False, bn_momentum=0.8)
    x = RNG.uniform(-1, 1, (3, 7, 7, 2)).astype("float32")
    layer(x, training=True)
    z = ref.conv2d(x.astype("float64"), np.asarray(keras.ops.convert_to_numpy(layer.kernel), "float64"),
                   layer.strides, layer.padding)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.branch_moving_mean),
                               0.2 * z.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.branch_moving_variance),
                               0.8 + 0.2 * z.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strides, padding", [(1, "same"), (2, "valid"), (2, "same")])
def test_shim_conv2d_matches_keras(strides, padding):
    """quadkeras' Conv2D (zero-copy torch path) == keras.layers.Conv2D, values and gradients."""
    if keras.backend.backend() == "jax":
        pytest.skip("ops.conv unchanged on jax; layer_grads' stateless_call passes `training`")
    x = RNG.uniform(-1, 1, (2, 7, 7, 3)).astype("float32")
    ours = Conv2D(4, 3, strides=strides, padding=padding)
    theirs = keras.layers.Conv2D(4, 3, strides=strides, padding=padding)
    ours.build(x.shape)
    theirs.build(x.shape)
    for a, b in zip(ours.weights, theirs.weights):
        b.assign(RNG.uniform(-1, 1, b.shape).astype("float32"))
        a.assign(b)
    upstream = RNG.standard_normal(keras.ops.convert_to_numpy(theirs(x)).shape).astype("float32")
    (out_a, gx_a, gv_a), (out_b, gx_b, gv_b) = (layer_grads(layer, x, upstream) for layer in (ours, theirs))
    np.testing.assert_allclose(out_a, out_b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_a, gx_b, rtol=1e-5, atol=1e-5)
    for a, b in zip(sorted(gv_a.items()), sorted(gv_b.items())):
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-5)


@pytest.mark.jax
@pytest.mark.parametrize("make, shape", [
    (lambda init: QuadConv2D(8, 3, kernel_initializer=init), (None, 6, 6, 4)),
    (lambda init: QuadDense(8, kernel_initializer=init), (None, 16)),
    (lambda init: QuadConv2D(8, 3, neuron="t4", kernel_initializer=init), (None, 6, 6, 4)),
])
@pytest.mark.parametrize("init", ["glorot_uniform", keras.initializers.VarianceScaling(1 / 3, seed=7)])
def test_fused_branches_start_as_independent_draws(make, shape, init):
    """Each branch of the fused kernel is its own draw (a Keras initializer repeats its draw
    when called again: QuadraLib's three convs must not start equal), same distribution."""
    layer = make(init)
    layer.build(shape)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    n, units = layer.num_branches, layer.units_per_branch
    branches = [kernel[..., i * units:(i + 1) * units].ravel() for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            assert abs(np.corrcoef(branches[i], branches[j])[0, 1]) < 0.3, (i, j)
    stds = [b.std() for b in branches]
    assert max(stds) / min(stds) < 1.3
