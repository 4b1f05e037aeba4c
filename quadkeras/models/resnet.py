"""CIFAR ResNet with BasicBlocks (QuadraLib / He et al. layout), quadratic or first-order.

Stem: Conv3x3 3->16 (no bias) -> BN -> ReLU. BasicBlock: [Quad]Conv3x3 stride s -> BN ->
ReLU -> [Quad]Conv3x3 -> BN -> (+ shortcut) -> ReLU; the shortcut is identity, or a
first-order Conv1x1 stride s (no bias) + BN when the shape changes. Head: global average
pooling -> Dense(num_classes).

Config keys:

    family: resnet
    stem_filters: 16
    stages: [{filters: 16, blocks: 2, stride: 1}, ...]
    conv: {type: quad, neuron: ours, use_bias: false}    # default for block convs
    stem: {type: conv}                                   # spec of the stem conv
    shortcut: {type: conv}                               # spec of 1x1 projection convs
    padding: pytorch      # (default) PyTorch's padding=1 also at stride 2; `same`: Keras'
    init: pytorch         # (default) PyTorch's default init; `keras`: he_normal / glorot
    overrides: {stage1_block1_conv1: {type: conv}, stage2_block2: {type: remove}}

Layer names: `stem_conv`, `stage{s}_block{b}_conv{1,2}`, `stage{s}_block{b}_shortcut`.
A whole block (`stage{s}_block{b}`) may be removed if it keeps the shape (not the first
block of a downsampling / widening stage).

Example:

>>> from quadkeras.models import build_model
>>> build_model("resnet20").count_params() > 270_000
True
"""

import keras

from quadkeras.models.blocks import apply_conv, batch_norm, check_conv_spec, conv_bn_relu
from quadkeras.models.blocks import dense_head, layer_spec, model_inputs


def resnet_layer_names(config):
    """Names of the block convs of a ResNet config, in order (candidates for quadratic)."""
    names = []
    for s, stage in enumerate(config["stages"], start=1):
        for b in range(1, stage["blocks"] + 1):
            names += [f"stage{s}_block{b}_conv1", f"stage{s}_block{b}_conv2"]
    return names


def _basic_block(x, config, in_filters, filters, stride, prefix):
    use_bias = config.get("use_bias", False)
    block_spec = check_conv_spec(config.get("overrides", {}).get(prefix, {"type": "conv"}), prefix)
    changes_shape = stride != 1 or in_filters != filters
    if block_spec["type"] == "remove":
        if changes_shape:
            raise ValueError(
                f"Invalid override {prefix}: type='remove' is only allowed for blocks that "
                "keep the shape (stride 1, same width)."
            )
        return x
    shortcut = x
    y = conv_bn_relu(x, config, layer_spec(config, f"{prefix}_conv1"), filters, stride,
                     f"{prefix}_conv1", use_bias)
    y = apply_conv(y, config, layer_spec(config, f"{prefix}_conv2"), filters, 3, 1, f"{prefix}_conv2",
                   use_bias)
    y = batch_norm(f"{prefix}_conv2_bn")(y)
    if changes_shape:
        spec = check_conv_spec(config.get("shortcut", {"type": "conv"}), f"{prefix}_shortcut")
        spec = check_conv_spec({**spec, **config.get("overrides", {}).get(f"{prefix}_shortcut", {})},
                               f"{prefix}_shortcut")
        shortcut = apply_conv(x, config, spec, filters, 1, stride, f"{prefix}_shortcut", False)
        shortcut = batch_norm(f"{prefix}_shortcut_bn")(shortcut)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def build_resnet(config):
    inputs, x = model_inputs(config)
    stem_filters = config.get("stem_filters", 16)
    stem_spec = check_conv_spec(
        {**config.get("stem", {"type": "conv"}), **config.get("overrides", {}).get("stem_conv", {})},
        "stem_conv",
    )
    x = conv_bn_relu(x, config, stem_spec, stem_filters, 1, "stem_conv", False)
    in_filters = stem_filters
    for s, stage in enumerate(config["stages"], start=1):
        for b in range(1, stage["blocks"] + 1):
            stride = stage.get("stride", 1) if b == 1 else 1
            x = _basic_block(x, config, in_filters, stage["filters"], stride, f"stage{s}_block{b}")
            in_filters = stage["filters"]
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = dense_head(x, config)
    return keras.Model(inputs, outputs, name=config.get("name", "resnet"))
