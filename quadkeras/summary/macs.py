"""Multiply-accumulate counts per layer (one image), QuadraLib's convention.

Linear layers count their MACs (conv: out_h*out_w*kh*kw*in/groups*out; dense: in*out);
a quadratic layer counts the MACs of every linear branch plus one multiply per output
element for its quadratic product (`t1`: the bilinear form's P^2+P per output).
QuadraLib's forward hooks count only the linear MACs: `include_products=False` gives
their figures (QResNet14 78.6M, QVGG-7 430.0M).
BatchNorm, activations, pooling and adds count 0.

Example:

>>> from quadkeras.models import build_model
>>> model = build_model("qresnet14")
>>> round(count_macs(model, include_products=False) / 1e6, 1)  # QuadraLib's 78.6M
78.6
>>> round(count_macs(model) / 1e6, 1)  # + one multiply per quadratic output element
78.7
"""

import numpy as np
import keras

from quadkeras.layers import QUAD_LAYERS
from quadkeras.layers.neurons import products_per_output


def _spatial(shape):
    return int(np.prod([d for d in shape[1:-1]])) if len(shape) > 2 else 1


def _kernel_macs(layer, output_shape):
    """MACs of the layer's linear op(s), or None if it has no kernel."""
    positions = _spatial(output_shape)
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return None
    return positions * int(np.prod(kernel.shape))


def layer_macs(layer, input_shape, output_shape, include_products=True):
    """MACs of one layer for one example given its (batched) input and output shapes."""
    inner = getattr(layer, "layer", None)  # quantize / BSQ wrappers hold the real layer
    if inner is not None and isinstance(inner, keras.layers.Layer):
        return layer_macs(inner, input_shape, output_shape, include_products)
    if isinstance(layer, QUAD_LAYERS):
        return _quad_macs(layer, output_shape, include_products)
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
        return _kernel_macs(layer, output_shape)
    return 0


def _quad_macs(layer, output_shape, include_products):
    positions = _spatial(output_shape)
    outputs = positions * int(output_shape[-1])
    if layer.neuron_spec.bilinear:
        patch = int(layer.kernel.shape[0])
        macs = outputs * patch * patch + (outputs * patch if include_products else 0)
        if layer.t1_linear:
            macs += positions * int(np.prod(layer.linear_kernel.shape))
        return macs
    products = outputs * products_per_output(layer.neuron) if include_products else 0
    return positions * int(np.prod(layer.kernel.shape)) + products


def per_layer_macs(model, include_products=True):
    """{layer name: MACs per example} for every layer of a functional model."""
    result = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        input_shape = layer.input.shape if not isinstance(layer.input, list) else layer.input[0].shape
        result[layer.name] = layer_macs(layer, input_shape, layer.output.shape, include_products)
    return result


def count_macs(model, include_products=True):
    """Total MACs per example of a functional model."""
    return int(sum(per_layer_macs(model, include_products).values()))
