"""Quadratic layers: `QuadConv2D`, `QuadDepthwiseConv2D`, `QuadDense`; a fused-kernel
`BatchNormalization` and a `Conv2D` without input copies on torch (drop-ins for Keras')."""

from quadkeras.layers.batch_norm import BatchNormalization
from quadkeras.layers.conv2d import Conv2D
from quadkeras.layers.neurons import NEURONS, num_branches
from quadkeras.layers.quad_base import QuadLayerBase
from quadkeras.layers.quad_conv import QuadConv2D
from quadkeras.layers.quad_dense import QuadDense
from quadkeras.layers.quad_depthwise import QuadDepthwiseConv2D

QUAD_LAYERS = (QuadConv2D, QuadDense, QuadDepthwiseConv2D)  # the quadratic layer types

__all__ = ["BatchNormalization", "Conv2D", "NEURONS", "QuadConv2D", "QuadDense", "QuadDepthwiseConv2D",
           "QuadLayerBase", "QUAD_LAYERS", "num_branches"]
