"""Bad input to the quadratic layers: one-line ValueErrors naming the argument."""

import numpy as np
import pytest

from quadkeras.layers import QuadConv2D, QuadDense, QuadDepthwiseConv2D


@pytest.mark.jax
@pytest.mark.parametrize("make, match", [
    (lambda: QuadConv2D(8, 3, neuron="t7"), "neuron='t7'.*'ours'"),
    (lambda: QuadConv2D(0, 3), "filters=0"),
    (lambda: QuadConv2D(-2, 3), "filters=-2"),
    (lambda: QuadDense(0), "units=0"),
    (lambda: QuadConv2D(8, 3, padding="full"), "padding='full'.*'same'"),
    (lambda: QuadConv2D(8, 3, padding=-1), "padding=-1.*non-negative"),
    (lambda: QuadConv2D(8, 3, padding=(1, 2, 3)), r"padding=\(1, 2, 3\).*\(top, bottom\)"),
    (lambda: QuadDepthwiseConv2D(3, padding=((1, 1), (1,))), "padding="),
    (lambda: QuadConv2D(6, 3, groups=4), "groups=4"),
    (lambda: QuadConv2D(6, 3, neuron="t1", groups=2), "groups"),
    (lambda: QuadDepthwiseConv2D(3, neuron="t1"), "neuron='t1'"),
    (lambda: QuadConv2D(8, (3, 3, 3)), "kernel_size"),
])
def test_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


@pytest.mark.jax
@pytest.mark.parametrize("layer, shape", [
    (lambda: QuadConv2D(4, 3), (2, 8, 8)),
    (lambda: QuadConv2D(4, 3), (2, 1, 8, 8, 3)),
    (lambda: QuadDepthwiseConv2D(3), (2, 8)),
    (lambda: QuadDense(4), (5,)),
])
def test_wrong_input_rank(layer, shape):
    with pytest.raises(ValueError, match="[Ii]nvalid input shape") as err:
        layer()(np.zeros(shape, "float32"))
    assert "\n" not in str(err.value)


@pytest.mark.jax
@pytest.mark.parametrize("make, size", [
    (lambda: QuadConv2D(4, 5), "3x3"),
    (lambda: QuadConv2D(4, 5, neuron="t1"), "3x3"),
    (lambda: QuadConv2D(4, (2, 4), padding=(0, 0)), "3x3"),
    (lambda: QuadConv2D(4, 3, dilation_rate=2), "3x3"),  # dilated: 5x5
    (lambda: QuadDepthwiseConv2D(5), "3x3"),
    (lambda: QuadDepthwiseConv2D(4, padding=((0, 0), (1, 0))), "3x3"),  # 3x4 padded
])
def test_kernel_larger_than_its_input_is_refused_at_build(make, size):
    """Keras' Conv2D refuses it at build; ours used to build and fail at call with a backend
    traceback (or give a 0x0 symbolic output)."""
    layer = make()
    with pytest.raises(ValueError) as err:
        layer.build((None, 3, 3, 2))
    text = str(err.value)
    assert f"'{layer.name}'" in text and "kernel_size=" in text and size in text, text
    assert "\n" not in text and not layer.built
    with pytest.raises(ValueError, match="kernel_size="):  # the functional API says the same
        make()(__import__("keras").Input((3, 3, 2)))


@pytest.mark.jax
@pytest.mark.parametrize("make", [
    lambda: QuadConv2D(4, 5, padding="same"),
    lambda: QuadConv2D(4, 5, padding=1),  # padded to 5x5: one output pixel
    lambda: QuadConv2D(4, 3),
    lambda: QuadDepthwiseConv2D(5, padding=1),
])
def test_kernel_that_fits_the_padded_input_builds(make):
    out = make()(np.zeros((1, 3, 3, 2), "float32"))
    assert min(out.shape[1:3]) >= 1
