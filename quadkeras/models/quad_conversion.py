"""Building a quadratized model from a first-order one: `convert(model, names, neuron)`.

The conversion `quadkeras.quadratize` describes (its module docstring: which weights
each new branch starts from and why the function is unchanged at the start), apart from the
choice of layers: `quadratize` picks them (by name, regex or a ranking) and
`quadkeras.quadratize.rank` ranks them on trial conversions made here.

Example:

>>> from quadkeras.models import build_model
>>> model = build_model("resnet20", input_shape=(8, 8, 3))
>>> quad = convert(model, ["stage3_block3_conv2"])
>>> type(quad.get_layer("stage3_block3_conv2")).__name__
'QuadConv2D'
>>> quadratized_config({"family": "resnet"}, ["stem_conv"])["overrides"]
{'stem_conv': {'type': 'quad', 'neuron': 'ours'}}
"""

import json
import zlib

import numpy as np
import keras

from quadkeras.backend import keras_private
from quadkeras.models.builder import build_model
from quadkeras.utils.attached_config import config_of

NEURONS = ("ours", "t1")  # a first-order term for the old kernel, a product term that can start at 0


def _plain(config):
    return json.loads(json.dumps(config))


def check_model(model):
    """The plain config of a float `model` built from a zoo name / config; one-line errors."""
    config = config_of(model)
    if config is None:
        raise ValueError("Invalid model: it carries no quadkeras model config; build it with "
                         "quadkeras.models.build_model or load it with model_config.load_model "
                         "(a zoo / config model, or a .keras file quadkeras wrote).")
    if config.get("quantize"):
        raise ValueError("Invalid model: a quantized model (config key 'quantize'); quadratize "
                         "the float model, then quantize it (quadkeras.quantize.quantize_model).")
    return _plain(config)


def _following_bn(model, name):
    """The BatchNormalization the layer `name` feeds (its only consumer), or None."""
    ops_ = keras_private.consumers(model.get_layer(name))
    if len(ops_) == 1 and isinstance(ops_[0], keras.layers.BatchNormalization):
        return ops_[0]
    return None


def quadratized_config(config, names, neuron="ours", biases=None):
    """`config` with the layers `names` made quadratic (`overrides`), name suffixed `_quad`.

    `biases`: {name: use_bias} of the old layers (default: the config's `use_bias`).
    """
    new = _plain(config)
    overrides = new.setdefault("overrides", {})
    for name in names:
        spec = {"type": "quad", "neuron": neuron}
        if biases is not None:
            spec["use_bias"] = bool(biases[name])
        if neuron == "t1":
            spec["t1_linear"] = True
        overrides[name] = {**overrides.get(name, {}), **spec}
    base = config.get("name", config["family"])
    new["name"] = base if base.endswith("_quad") else f"{base}_quad"
    return new


def convert(model, names, neuron="ours", config=None, seed=0):
    """Build the quadratized model of `names` and fill it from `model` (see the module).

    The fresh branches (W_a, W_b and their biases) are drawn by the config's initialisers
    seeded from (`seed`, layer name, branch): the same call gives the same model, and the
    `gradient` ranking scores exactly the start the chosen layers then get."""
    config = check_model(model) if config is None else config
    biases = {n: model.get_layer(n).use_bias for n in names}
    follow = {n: _following_bn(model, n) for n in names}
    if neuron == "ours":
        lonely = [n for n, bn in follow.items() if bn is None]
        if lonely:
            raise ValueError(f"Invalid layers={lonely!r}: neuron='ours' needs a BatchNormalization "
                             "right after the layer (its linear branch has a batch-statistics BN); "
                             f"expected layers followed by one, or neuron='t1'.")
    new = build_model(quadratized_config(config, names, neuron, biases))
    old_layers = {layer.name: layer for layer in model.layers}
    bn_after = {follow[n].name: n for n in names if follow[n] is not None and neuron == "ours"}
    for layer in new.layers:
        old = old_layers.get(layer.name)
        if layer.name in names:
            _fill_quad(layer, old, follow[layer.name] if neuron == "ours" else None, seed)
        elif old is not None and old.weights:
            layer.set_weights(old.get_weights())
            if layer.name in bn_after:
                _hand_over_statistics(layer)
        elif old is None and layer.weights:
            raise ValueError(f"Invalid model: layer {layer.name!r} of the quadratized config has "
                             "no counterpart in the model (was it built from this config?).")
    return new


def _np(variable):
    return np.array(keras.ops.convert_to_numpy(variable))


def _seeded(initializer, seed, name, branch):
    """`initializer` with a seed from (seed, layer name, branch) (as is when it takes none)."""
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    mixed = (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 7 + branch) % (2 ** 31 - 1)
    return initializer.__class__.from_config({**config, "seed": mixed})


def _fill_quad(layer, old, bn, seed=0):
    """Set a fresh QuadLayer `layer` from the first-order `old` (and the BN `bn` it feeds)."""
    kernel = _np(old.kernel)
    bias = _np(old.bias) if old.use_bias else None
    if layer.neuron == "t1":
        layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
        layer.linear_kernel.assign(kernel)
        if bias is not None:
            layer.bias.assign(bias)
        return
    fused = _np(layer.kernel)
    ka, kb, kc = layer._kernel_branch_index  # channels of each branch (fused layout)
    fused[..., kc] = kernel
    for i, idx in enumerate((ka, kb)):
        fused[..., idx] = _np(_seeded(layer.kernel_initializer, seed, layer.name, i)(
            kernel.shape, dtype="float32"))
    layer.kernel.assign(fused)
    a, b, c = layer._branch_index
    if bias is not None:
        fused_bias = _np(layer.bias)
        fused_bias[c] = bias
        for i, idx in enumerate((a, b)):
            fused_bias[idx] = _np(_seeded(layer.bias_initializer, seed, layer.name, 10 + i)(
                bias.shape, dtype="float32"))
        layer.bias.assign(fused_bias)
    gamma, beta = _np(layer.branch_gamma), _np(layer.branch_beta)
    mean, var = _np(layer.branch_moving_mean), _np(layer.branch_moving_variance)
    gamma[a], beta[a] = 0.0, 0.0  # product term exactly 0
    gamma[c], beta[c] = 1.0, 0.0
    mean[c], var[c] = _np(bn.moving_mean), _np(bn.moving_variance)
    for variable, value in ((layer.branch_gamma, gamma), (layer.branch_beta, beta),
                            (layer.branch_moving_mean, mean), (layer.branch_moving_variance, var)):
        variable.assign(value)


def _hand_over_statistics(bn):
    """The BN after an `ours` layer: its input is now standardised (moving stats -> BN_c)."""
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, 1.0 - bn.epsilon, "float32"))
