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
