"""`quadkeras.training.torch_layers`: each raw-torch layer forward computes the layer's own
`call` (outputs, input and variable gradients, BatchNorm moving statistics), and declines
(None) the configurations and inputs it does not cover."""

import numpy as np
import pytest
import keras

from quadkeras.layers import BatchNormalization, Conv2D, QuadConv2D

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="raw-torch layer forwards exist on torch only")

CASES = {
    "conv3x3_same_bias_relu": (lambda: keras.layers.Conv2D(5, 3, padding="same", activation="relu"), (2, 6, 6, 3)),
    "qk_conv3x3_valid": (lambda: Conv2D(4, 3, use_bias=False), (2, 6, 6, 3)),
    "qk_conv1x1_stride2": (lambda: Conv2D(4, 1, strides=2, use_bias=False), (2, 7, 7, 3)),
    # Keras' own strided 1x1 conv: 16 input channels, clear of oneDNN's strided 1x1 backward
    # bug (wrong kernel gradients below 16 channels: quadkeras.layers.fused_ops)
    "conv1x1_stride2_same": (lambda: keras.layers.Conv2D(4, 1, strides=2, padding="same"), (2, 6, 6, 16)),
    "conv_dilated_same": (lambda: keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2), (2, 8, 8, 3)),
    "conv_grouped": (lambda: keras.layers.Conv2D(4, 3, padding="same", groups=2), (2, 6, 6, 4)),
    "conv_stride2_valid": (lambda: keras.layers.Conv2D(4, 3, strides=2), (2, 7, 7, 3)),
    "batch_norm": (lambda: BatchNormalization(momentum=0.9, epsilon=1e-3), (4, 5, 5, 3)),
    "relu": (lambda: keras.layers.ReLU(), (2, 4, 3)),
    "activation_relu": (lambda: keras.layers.Activation("relu"), (2, 4, 3)),
    "activation_linear": (lambda: keras.layers.Activation("linear"), (2, 4, 3)),
    "zero_padding": (lambda: keras.layers.ZeroPadding2D(((1, 2), (0, 3))), (2, 4, 4, 3)),
    "global_average": (lambda: keras.layers.GlobalAveragePooling2D(), (2, 4, 4, 3)),
    "global_average_keepdims": (lambda: keras.layers.GlobalAveragePooling2D(keepdims=True), (2, 4, 4, 3)),
    "dense_relu": (lambda: keras.layers.Dense(4, activation="relu"), (3, 5)),
    "dense_no_bias": (lambda: keras.layers.Dense(4, use_bias=False), (3, 5)),
    "quad_ours_same_bias_relu": (lambda: QuadConv2D(4, 3, padding="same", activation="relu"), (2, 6, 6, 3)),
    "quad_ours_stride2_pad1": (lambda: QuadConv2D(4, 3, strides=2, padding=1, use_bias=False,
                                                  bn_momentum=0.8), (3, 7, 7, 3)),
    "quad_ours_1x1_stride2": (lambda: QuadConv2D(4, 1, strides=2, use_bias=False), (2, 6, 6, 16)),
}

def _wrapped(layer, kernel="lsq:4", input_="lsq:4", **kwargs):
    from quadkeras.quantize import QuantizeWrapper

    return QuantizeWrapper(layer, kernel_quantizer=kernel, input_quantizer=input_, **kwargs)


CASES.update({
    "lsq_conv": (lambda: _wrapped(Conv2D(4, 3, padding="same", use_bias=False)), (2, 5, 5, 3)),
    "lsq_conv_stride2_bias_relu": (lambda: _wrapped(keras.layers.Conv2D(4, 1, strides=2, activation="relu")),
                                   (2, 6, 6, 16)),
    "lsq_per_channel_kernel": (lambda: _wrapped(Conv2D(4, 3), kernel={"name": "lsq", "bits": 3,
                                                                     "granularity": "per_channel"}),
                               (2, 5, 5, 3)),
    "lsq_dense_kernel_only": (lambda: _wrapped(keras.layers.Dense(3), input_=None), (4, 6)),
    "dorefa_conv": (lambda: _wrapped(Conv2D(4, 3), kernel="dorefa:4", input_="dorefa:4"), (2, 5, 5, 3)),
    "lsq_quad_ours": (lambda: _wrapped(QuadConv2D(4, 3, padding=1, use_bias=False)), (2, 5, 5, 3)),
})

NOT_COVERED = {
    "relu6": lambda: keras.layers.ReLU(max_value=6.0),
    "leaky": lambda: keras.layers.ReLU(negative_slope=0.1),
    "conv_sigmoid": lambda: keras.layers.Conv2D(4, 3, activation="sigmoid"),
    "conv_same_stride2_3x3": lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same"),
    "conv_channels_first": lambda: keras.layers.Conv2D(4, 3, data_format="channels_first"),
    "keras_batch_norm": lambda: keras.layers.BatchNormalization(),
    "batch_norm_no_scale": lambda: BatchNormalization(scale=False),
    "dense_softmax": lambda: keras.layers.Dense(3, activation="softmax"),
    "dropout": lambda: keras.layers.Dropout(0.5),
    "lsq_output_quantizer": lambda: _wrapped(Conv2D(4, 3), output_quantizer="lsq:8"),
    "lsq_depthwise": lambda: _wrapped(keras.layers.DepthwiseConv2D(3)),
    "quad_t4": lambda: QuadConv2D(4, 3, neuron="t4"),
    "quad_grouped": lambda: QuadConv2D(4, 3, groups=2),
    "quad_recompute": lambda: QuadConv2D(4, 3, recompute=True),
    "quad_uneven_padding": lambda: QuadConv2D(4, 3, padding=((0, 1), (1, 1))),
    "quad_sigmoid": lambda: QuadConv2D(4, 3, activation="sigmoid"),
}


def _run(layer, x, training, native):
    """(output, input gradient, variable gradients) of `sum(output * weights)`."""
    import torch

    from quadkeras.training.torch_layers import native_layer_call

    xt = torch.tensor(x, requires_grad=True)
    if native:
        y = native_layer_call(layer)(xt, training)
    else:
        y = layer.call(xt, training=training) if "training" in _args(layer) else layer.call(xt)
    w = torch.linspace(-1.0, 2.0, y.numel()).reshape(y.shape)
    variables = [v.value for v in layer.trainable_variables]
    grads = torch.autograd.grad((y * w).sum(), [xt] + variables)
    return [y.detach().numpy()] + [g.numpy() for g in grads]


def _args(layer):
    import inspect

    return inspect.signature(layer.call).parameters


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_native_forward_matches_layer_call(case, training):
    make, shape = CASES[case]
    keras.utils.set_random_seed(0)
    layer = make()
    layer.build(shape)
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    if hasattr(layer, "kernel_quantizer"):  # a first training call sets the activation steps
        layer(x, training=True)
        assert all(q.init_state != "pending" for q in layer.quantizers())
    start = [keras.ops.convert_to_numpy(v) for v in layer.variables]
    reference = _run(layer, x, training, native=False)
    after_keras = [keras.ops.convert_to_numpy(v) for v in layer.variables]
    for v, value in zip(layer.variables, start):
        v.assign(value)
    ours = _run(layer, x, training, native=True)
    assert len(ours) == len(reference)
    # a bias before a training BatchNorm has a zero gradient: both sides give float32 noise
    atol = 1e-5 if case == "quad_ours_same_bias_relu" and training else 1e-6
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)
    for v, value in zip(layer.variables, after_keras):  # BatchNorm's moving statistics
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), value, rtol=1e-6, atol=1e-7)
    if case in ("batch_norm", "quad_ours_stride2_pad1") and training:
        moving = [i for i, v in enumerate(layer.variables) if "moving_mean" in v.path]
        assert not np.allclose(after_keras[moving[0]], start[moving[0]])  # the moving mean did move


@pytest.mark.parametrize("case", sorted(NOT_COVERED))
def test_uncovered_configurations_have_no_native_forward(case):
    from quadkeras.training.torch_layers import native_layer_call

    layer = NOT_COVERED[case]()
    layer.build((2, 6, 6, 4))
    assert native_layer_call(layer) is None


def test_non_float32_inputs_and_other_axes_are_declined():
    import torch

    from quadkeras.training.torch_layers import native_layer_call

    conv = keras.layers.Conv2D(2, 3)
    conv.build((1, 5, 5, 2))
    run = native_layer_call(conv)
    assert run(torch.zeros(1, 5, 5, 2, dtype=torch.float64), True) is None
    assert run(torch.zeros(1, 5, 5, 2), True) is not None
    bn = BatchNormalization(axis=1)
    bn.build((2, 3, 4, 4))
    assert native_layer_call(bn)(torch.zeros(2, 3, 4, 4), True) is None  # not the last axis
    add = native_layer_call(keras.layers.Add())
    assert add([torch.zeros(2, 3), torch.zeros(3)], True) is None  # Keras expands ranks its own way


def test_lsq_wrapper_quantizes_without_calling_its_quantizers():
    """The LSQ steps go straight into one ScaledRound each: no `Quantizer.__call__`."""
    import torch
    from unittest import mock

    from quadkeras.training.torch_layers import native_layer_call
    from quadkeras.quantizers.base import Quantizer

    wrapper = _wrapped(Conv2D(4, 3, padding="same"))
    wrapper.build((2, 5, 5, 3))
    x = torch.randn(2, 5, 5, 3)
    run = native_layer_call(wrapper)
    assert run(x, True) is not None  # pending input step: the quantizer's own call sets it
    assert wrapper.input_quantizer.init_state != "pending"
    with mock.patch.object(Quantizer, "__call__", side_effect=AssertionError("generic call")):
        y = run(x, True)
    np.testing.assert_allclose(y.detach().numpy(), keras.ops.convert_to_numpy(wrapper.call(x, training=True)),
                               rtol=1e-6, atol=1e-6)


def test_quad_conv_takes_the_layers_global_batch_statistics_path_when_batch_norm_step_declines():
    """Data-parallel training (`batch_norm_step` is None there): `batch_norm_train` and
    `update_moving`, as the layer's own call, same outputs and moving statistics."""
    import torch
    from unittest import mock

    from quadkeras.training import torch_layers

    layer = QuadConv2D(4, 3, padding="same")
    layer.build((2, 5, 5, 3))
    x = torch.randn(2, 5, 5, 3)
    start = [keras.ops.convert_to_numpy(v) for v in layer.variables]
    reference = keras.ops.convert_to_numpy(layer.call(x, training=True))
    after = [keras.ops.convert_to_numpy(v) for v in layer.variables]
    for v, value in zip(layer.variables, start):
        v.assign(value)
    with mock.patch.object(torch_layers, "batch_norm_step", return_value=None) as step:
        y = torch_layers.native_layer_call(layer)(x, True)
    assert step.called
    np.testing.assert_allclose(y.detach().numpy(), reference, rtol=1e-5, atol=1e-6)
    for v, value in zip(layer.variables, after):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), value, rtol=1e-6, atol=1e-7)


def test_quad_conv_with_an_export_hook_runs_the_layers_own_call():
    import torch

    from quadkeras.training.torch_layers import native_layer_call

    layer = QuadConv2D(4, 3, padding="same")
    wrapper = _wrapped(QuadConv2D(4, 3, padding="same"))
    layer.build((2, 5, 5, 3))
    wrapper.build((2, 5, 5, 3))
    run, wrapped_run = native_layer_call(layer), native_layer_call(wrapper)
    layer.fused_output_hook = wrapper.layer.fused_output_hook = lambda z, index: z
    assert run(torch.zeros(2, 5, 5, 3), True) is None
    assert wrapped_run(torch.zeros(2, 5, 5, 3), True) is None
