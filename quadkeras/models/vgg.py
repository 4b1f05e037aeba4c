"""CIFAR-style VGG (QuadraLib layout): [Quad]Conv3x3 -> BN -> ReLU, "M" = MaxPool 2,
head Flatten -> Dense(num_classes). No dropout, no FC-4096.

Config keys (see `quadkeras.models.zoo` for complete examples):

    family: vgg
    cfg: [64, 64, M, 128, ...]   # ints, "M", or {"filters": 64, "type": "quad", ...}
    conv: {type: quad, neuron: ours, use_bias: true}   # default for every conv entry
    overrides: {conv3: {type: conv}, conv5: {type: remove}}
    init: pytorch   # (default) QuadraLib's init: conv kaiming_normal, linear N(0, 0.01)
    padding: pytorch  # every conv is 3x3 stride 1, so `same` is the same function here

Convs are named `conv1`, `conv2`, ... in cfg order (removed ones keep their number).

Example:

>>> from quadkeras.models import build_model
>>> build_model({"family": "vgg", "cfg": [8, "M"], "input_shape": [8, 8, 3],
...              "num_classes": 2}).count_params()  # conv 224 + BN 32 + logits 258
514
"""

import keras

from quadkeras.models.blocks import check_conv_spec, conv_bn_relu, dense_head, layer_spec, model_inputs


def vgg_layer_names(config):
    """Names of the conv entries of a VGG config, in order."""
    return [f"conv{i + 1}" for i, e in enumerate(_conv_entries(config))]


def _conv_entries(config):
    return [e for e in config["cfg"] if e != "M"]


def build_vgg(config):
    inputs, x = model_inputs(config)
    use_bias = config.get("use_bias", True)
    conv_index, pool_index = 0, 0
    for entry in config["cfg"]:
        if entry == "M":
            pool_index += 1
            x = keras.layers.MaxPooling2D(2, name=f"pool{pool_index}")(x)
            continue
        conv_index += 1
        name = f"conv{conv_index}"
        spec = layer_spec(config, name)
        if isinstance(entry, dict):
            entry = dict(entry)
            filters = entry.pop("filters")
            spec = check_conv_spec({**spec, **entry}, name)
        else:
            filters = int(entry)
        if spec["type"] == "remove":
            continue
        x = conv_bn_relu(x, config, spec, filters, 1, name, use_bias)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = dense_head(x, config)
    return keras.Model(inputs, outputs, name=config.get("name", "vgg"))
