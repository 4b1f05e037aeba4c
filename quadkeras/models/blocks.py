"""Layer factories shared by the VGG and ResNet builders.

A *conv spec* is a plain dict saying what kind of convolution to build:

    {"type": "conv"}                                     # keras.layers.Conv2D
    {"type": "quad", "neuron": "ours", "use_bias": False} # quadkeras QuadConv2D
    {"type": "remove"}                                   # drop the layer (where allowed)

Example:

>>> layer = make_conv({"type": "quad", "neuron": "t4"}, 8, 3, 1, "c1", use_bias=False)
>>> type(layer).__name__, layer.neuron
('QuadConv2D', 't4')
"""

import keras

from quadkeras.layers import QuadConv2D
from quadkeras.layers.neurons import check_neuron
from quadkeras.utils.validation import check_choice

CONV_TYPES = ("conv", "quad", "remove")
SPEC_KEYS = ("type", "neuron", "use_bias", "recompute", "t1_linear")
BN_MOMENTUM = 0.9  # PyTorch's (QuadraLib's) BatchNorm momentum, in Keras' convention
BN_EPSILON = 1e-5


def check_conv_spec(spec, where):
    """Validate a conv spec dict; returns it with defaults filled in."""
    if not isinstance(spec, dict):
        raise ValueError(f"Invalid conv spec for {where}: expected a dict, got {spec!r}.")
    unknown = sorted(set(spec) - set(SPEC_KEYS) - {"filters"})
    if unknown:
        raise ValueError(
            f"Invalid key {unknown[0]!r} in conv spec for {where}: expected keys among "
            f"{', '.join(SPEC_KEYS + ('filters',))}."
        )
    spec = {"type": "conv", **spec}
    check_choice(f"type (conv spec for {where})", spec["type"], CONV_TYPES)
    if spec["type"] == "quad":
        spec.setdefault("neuron", "ours")
        check_neuron(spec["neuron"])
    return spec


def make_conv(spec, filters, kernel_size, strides, name, use_bias):
    """Build the conv layer described by `spec` (bias from the spec, else `use_bias`)."""
    bias = spec.get("use_bias", use_bias)
    if spec["type"] == "quad":
        return QuadConv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            neuron=spec.get("neuron", "ours"),
            use_bias=bias,
            recompute=spec.get("recompute", False),
            t1_linear=spec.get("t1_linear", True),
            kernel_initializer="he_normal",
            name=name,
        )
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=bias,
        kernel_initializer="he_normal",
        name=name,
    )


def batch_norm(name):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv_bn_relu(x, spec, filters, strides, name, use_bias):
    """[Quad]Conv3x3 -> BN -> ReLU, with layers named `name`, `name_bn`, `name_relu`."""
    x = make_conv(spec, filters, 3, strides, name, use_bias)(x)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def layer_spec(config, name, default_key="conv"):
    """The conv spec of layer `name`: the config's default merged with its override."""
    base = dict(config.get(default_key, {"type": "conv"}))
    override = config.get("overrides", {}).get(name, {})
    return check_conv_spec({**base, **override}, name)


def model_inputs(config):
    """Input tensor plus optional in-model normalisation from `config["normalize"]`."""
    inputs = keras.Input(shape=tuple(config["input_shape"]), name="image")
    x = inputs
    norm = config.get("normalize")
    if norm:
        mean = [float(m) for m in norm["mean"]]
        variance = [float(s) ** 2 for s in norm["std"]]
        x = keras.layers.Normalization(mean=mean, variance=variance, name="normalize")(x)
    return inputs, x
