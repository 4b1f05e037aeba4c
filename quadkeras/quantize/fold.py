"""Fold every inference BatchNormalization into the layer that feeds it (exact at inference).

`fold_batch_norms(model)` returns a new functional model in which each BatchNormalization
whose only input is a conv/dense/quadratic layer (and which is that layer's only consumer) is
replaced by a `FoldedBatchNorm` (an identity) of the same name and absorbed into the layer before it, using the
BN's moving statistics `y = s * x + t` with `s = gamma / sqrt(var + eps)`, `t = beta - mean * s`:

- `Conv2D` / `Dense` / `DepthwiseConv2D` (no activation): kernel scaled per output channel,
  bias `b * s + t` (a bias is added when the layer had none);
- a quadratic `ours` layer (`a * b + c` with per-branch BNs): `s * (a * b + c) + t =
  (s * a) * b + (s * c + t)`, so branch `a`'s BN gamma/beta and branch `c`'s are scaled by
  `s` and `t` is added to branch `c`'s beta. The layer stays an `ours` layer; its per-branch
  BN is folded into the fused kernel by the LiteRT converter.

Why: an int8 LiteRT file has no int8 BatchNormalization: a BN between two fake-quants stays a
float MUL/ADD between QUANTIZE/DEQUANTIZE. After folding, the block BN of a quadratic ResNet
disappears, and with a fake-quant after the product, after the quadratic add and after the
residual add (`quadkeras.quantize.int8_graph`), every conv, MUL and ADD of the file is int8.
The original model is not modified (new layers, copied and folded weights). BNs that do not
fit the pattern are kept.

Example:

>>> import numpy as np, keras
>>> inp = keras.Input((6, 6, 3))
>>> x = keras.layers.Conv2D(4, 3, use_bias=False, name="c")(inp)
>>> out = keras.layers.BatchNormalization(name="c_bn")(x)
>>> m = keras.Model(inp, out)
>>> m.get_layer("c_bn").set_weights([np.full(4, 2.0), np.ones(4), np.zeros(4), np.ones(4)])
>>> folded = fold_batch_norms(m)
>>> type(folded.get_layer("c_bn")).__name__, folded.get_layer("c").use_bias
('FoldedBatchNorm', True)
>>> x = np.random.default_rng(0).standard_normal((2, 6, 6, 3)).astype("float32")
>>> bool(np.allclose(m.predict(x, verbose=0), folded.predict(x, verbose=0), atol=1e-4))
True
"""

import keras
import numpy as np
from keras import ops

from quadkeras.backend import keras_private
from quadkeras.layers import QUAD_LAYERS

LINEAR_LAYERS = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D)


@keras.saving.register_keras_serializable(package="quadkeras")
class FoldedBatchNorm(keras.layers.Layer):
    """Identity left where a BatchNormalization was folded away (keeps the BN's name and
    accepts its call arguments: `training`, `mask`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def bn_scale_shift(bn):
    """(s, t) of an inference BatchNormalization as NumPy vectors: `bn(x) = s * x + t`."""
    n = ops.convert_to_numpy(bn.moving_mean).shape[-1]
    gamma = ops.convert_to_numpy(bn.gamma) if bn.scale else np.ones(n, "float32")
    beta = ops.convert_to_numpy(bn.beta) if bn.center else np.zeros(n, "float32")
    mean = ops.convert_to_numpy(bn.moving_mean)
    var = ops.convert_to_numpy(bn.moving_variance)
    s = gamma / np.sqrt(var + bn.epsilon)
    return s.astype("float32"), (beta - mean * s).astype("float32")


def graph_edges(model):
    """({id(layer): [producer layers]}, {id(layer): [consumer layers]}) within `model`'s own
    graph (a layer object shared with other models has nodes there too: those are ignored)."""
    producers, consumers = {}, {}
    for node in keras_private.graph_nodes(model):
        for tensor in node.input_tensors:
            source = keras_private.producer(tensor)
            producers.setdefault(id(node.operation), []).append(source)
            consumers.setdefault(id(source), []).append(node.operation)
    return producers, consumers


def foldable_pairs(model):
    """{id(producer): BN} for each BN that `fold_batch_norms` can absorb into its producer."""
    producers, consumers = graph_edges(model)
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization) or bn.axis not in (-1, len(bn.input.shape) - 1):
            continue
        source = producers.get(id(bn), [])
        if len(source) == 1 and _can_absorb(source[0]) and len(consumers.get(id(source[0]), [])) == 1:
            pairs[id(source[0])] = bn
    return pairs


def _can_absorb(layer):
    if isinstance(layer, QUAD_LAYERS):
        return layer.neuron == "ours" and layer.activation in (None, keras.activations.linear)
    if isinstance(layer, LINEAR_LAYERS):
        return layer.activation in (None, keras.activations.linear) and (
            getattr(layer, "data_format", "channels_last") == "channels_last")
    return False


def fold_batch_norms(model):
    """A new functional model with the foldable BatchNormalizations absorbed (see module doc)."""
    pairs = foldable_pairs(model)
    folded_bns = {id(bn) for bn in pairs.values()}
    todo = []

    def clone(layer):
        if id(layer) in folded_bns:
            return FoldedBatchNorm(name=layer.name)
        if id(layer) in pairs:
            config = layer.get_config()
            if isinstance(layer, LINEAR_LAYERS):
                config["use_bias"] = True
            new = type(layer).from_config(config)
            todo.append((new, layer, pairs[id(layer)]))
            return new
        return layer.__class__.from_config(layer.get_config()) if _has_state(layer) else layer

    folded = keras.models.clone_model(model, clone_function=clone)
    for new, old, bn in todo:
        _assign(new, _folded_weights(old, bn))
    for new_layer in folded.layers:  # copy the untouched layers' weights (new objects)
        old = _find(model, new_layer.name)
        if old is not None and _has_state(old) and id(old) not in pairs and id(old) not in folded_bns:
            new_layer.set_weights(old.get_weights())
    return folded


def _has_state(layer):
    return bool(layer.weights) and not isinstance(layer, keras.Model)


def _find(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _assign(layer, values):
    by_name = {v.name: v for v in layer.weights}
    for name, value in values.items():
        by_name[name].assign(np.asarray(value, "float32"))


def _folded_weights(layer, bn):
    """{variable name: folded value} for `layer` followed by `bn`."""
    s, t = bn_scale_shift(bn)
    weights = {v.name: ops.convert_to_numpy(v) for v in layer.weights}
    if isinstance(layer, QUAD_LAYERS):
        return _fold_into_ours(layer, weights, s, t)
    kernel = weights["kernel"]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, c, m = kernel.shape
        weights["kernel"] = (kernel.reshape(kh, kw, c * m) * s).reshape(kernel.shape)
    else:
        weights["kernel"] = kernel * s
    weights["bias"] = weights.get("bias", np.zeros_like(s)) * s + t
    return weights


def _fold_into_ours(layer, weights, s, t):
    """`s * (a * b + c) + t` -> branch a scaled by s, branch c scaled by s and shifted by t."""
    gamma, beta = weights["branch_gamma"].copy(), weights["branch_beta"].copy()
    idx_a, _, idx_c = layer._branch_index
    for idx in (idx_a, idx_c):
        gamma[idx] = gamma[idx] * s
        beta[idx] = beta[idx] * s
    beta[idx_c] = beta[idx_c] + t
    weights["branch_gamma"], weights["branch_beta"] = gamma, beta
    return weights
