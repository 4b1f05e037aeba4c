"""Every quadkeras layer and wrapper through the Keras-style layer test (`layer_harness`):
config, symbolic + eager call vs compute_output_shape, one fit step, `.keras` round trip with
identical outputs, mixed_float16 / mixed_bfloat16 — on the current backend. Tiny shapes."""

import keras
import numpy as np
import pytest

from quadkeras.bsq import bsq_layer
from quadkeras.layers import BatchNormalization, Conv2D, QuadConv2D, QuadDense, QuadDepthwiseConv2D
from quadkeras.quantize import QuantizeOutput, QuantizeWrapper
from tests.layer_harness import run_layer_test

IMAGE, VECTOR = (2, 6, 6, 4), (2, 5)
CASES = {  # id: (make a fresh layer, input shape, expected output shape)
    "quad_conv_ours": (lambda: QuadConv2D(4, 3, padding="same", neuron="ours", activation="relu"),
                       IMAGE, (2, 6, 6, 4)),
    "quad_conv_t2_4_grouped": (lambda: QuadConv2D(4, 3, strides=2, groups=2, neuron="t2_4"),
                               IMAGE, (2, 2, 2, 4)),
    "quad_conv_t1": (lambda: QuadConv2D(2, 1, neuron="t1"), IMAGE, (2, 6, 6, 2)),
    "quad_depthwise_t4": (lambda: QuadDepthwiseConv2D(3, depth_multiplier=2, padding="same",
                                                      neuron="t4"), IMAGE, (2, 6, 6, 8)),
    "quad_dense_t3": (lambda: QuadDense(3, neuron="t3"), VECTOR, (2, 3)),
    "batch_norm": (lambda: BatchNormalization(), IMAGE, IMAGE),
    "conv2d": (lambda: Conv2D(3, 3, strides=2, padding="same"), IMAGE, (2, 3, 3, 3)),
    "quantize_quad_conv_int8_qat": (
        lambda: QuantizeWrapper(QuadConv2D(4, 3, padding="same"), "fakequant:8", "fakequant:8",
                                "fakequant:8", branch_quantizer="fakequant:8",
                                product_quantizer="fakequant:8"), IMAGE, (2, 6, 6, 4)),
    "quantize_conv_lsq_pact": (lambda: QuantizeWrapper(keras.layers.Conv2D(3, 3), "lsq:4:per_channel",
                                                       "pact:4"), IMAGE, (2, 4, 4, 3)),
    "quantize_depthwise_dorefa": (lambda: QuantizeWrapper(keras.layers.DepthwiseConv2D(3), "dorefa:4",
                                                          "dorefa:4"), IMAGE, (2, 4, 4, 4)),
    "quantize_dense_lqnet": (lambda: QuantizeWrapper(keras.layers.Dense(3), "lsq_mq:2", "lqnet:2"),
                             VECTOR, (2, 3)),
    "quantize_quad_dense_lsq": (lambda: QuantizeWrapper(QuadDense(3), "lsq:4", "lsq:4"), VECTOR, (2, 3)),
    "quantize_output_bn": (lambda: QuantizeOutput(keras.layers.BatchNormalization(), "fakequant:8"),
                           IMAGE, IMAGE),
    "bsq_conv_bits": (lambda: bsq_layer(keras.layers.Conv2D(3, 3), bits=4), IMAGE, (2, 4, 4, 3)),
    "bsq_quad_dense_float": (lambda: bsq_layer(QuadDense(3), bits=3, representation="float"),
                             VECTOR, (2, 3)),
    "bsq_dense_bias_bits": (lambda: bsq_layer(keras.layers.Dense(3), bits=4, quantize_bias=True),
                            VECTOR, (2, 3)),
}


WRAPPERS = (QuantizeWrapper, QuantizeOutput)


# one case per class also runs in the fast JAX process (each case costs seconds of XLA compiles)
JAX_CASES = ("quad_conv_ours", "quad_depthwise_t4", "quad_dense_t3", "batch_norm", "conv2d",
             "quantize_quad_conv_int8_qat", "quantize_output_bn", "bsq_conv_bits")


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.jax) if c in JAX_CASES else c
                                  for c in sorted(CASES)])
def test_layer_contract(case):
    make, input_shape, expected = CASES[case]
    wrapper = isinstance(make(), WRAPPERS)  # paths: see the xfail below
    run_layer_test(make, input_shape, expected, same_variable_paths=not wrapper)


@pytest.mark.xfail(strict=True, reason="known: a loaded wrapper's inner variables lose the wrapper "
                   "prefix ('w/conv2d/kernel' -> 'conv2d/kernel'); values load correctly")
@pytest.mark.parametrize("case", ["quantize_conv_lsq_pact", "quantize_output_bn", "bsq_conv_bits"])
def test_wrapper_variable_paths_survive_keras_round_trip(case):
    from tests.layer_harness import check_keras_round_trip, check_symbolic

    make, input_shape, _ = CASES[case]
    x = np.random.default_rng(0).uniform(-1, 1, input_shape).astype("float32")
    check_keras_round_trip(check_symbolic(make(), input_shape), x)
