"""Layer factories shared by the VGG and ResNet builders.

A *conv spec* is a plain dict saying what kind of convolution to build:

    {"type": "conv"}                                     # quadkeras Conv2D (= keras.layers.Conv2D)
    {"type": "quad", "neuron": "ours", "use_bias": False} # quadkeras QuadConv2D
    {"type": "remove"}                                   # drop the layer (where allowed)

Example:

>>> x = keras.Input((32, 32, 3))
>>> y = apply_conv(x, {"family": "resnet"}, {"type": "quad", "neuron": "t4"}, 8, 3, 2, "c1",
...                use_bias=False)
>>> tuple(y.shape)
(None, 16, 16, 8)
"""

import keras

from quadkeras.layers import BatchNormalization, Conv2D, QuadConv2D
from quadkeras.layers.conv_utils import torch_equivalent_padding
from quadkeras.layers.neurons import check_neuron
from quadkeras.utils.validation import check_choice

CONV_TYPES = ("conv", "quad", "remove")
SPEC_KEYS = ("type", "neuron", "use_bias", "recompute", "t1_linear")
BN_MOMENTUM = 0.9  # PyTorch's (QuadraLib's) BatchNorm momentum, in Keras' convention
BN_EPSILON = 1e-5
PADDING_STYLES = ("pytorch", "same")
INIT_STYLES = ("pytorch", "keras")


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


def conv_style(config):
    """(padding, init) conventions of a model config, validated.

    `padding: pytorch` (default) pads every conv as the PyTorch originals (`padding=1` for
    3x3, also at stride 2); `padding: same` uses Keras' `"same"` (stride-2 convs then pad
    bottom/right only: a different function for the same weights). `init: pytorch`
    (default) initialises as the reference code of the family does (see
    `initializers_for`); `init: keras` keeps the earlier he_normal / glorot choice.
    """
    padding = check_choice("padding (model config)", config.get("padding", "pytorch"), PADDING_STYLES)
    init = check_choice("init (model config)", config.get("init", "pytorch"), INIT_STYLES)
    return padding, init


def initializers_for(config, kind, fan_in):
    """(kernel, bias) initializers of a `kind` ("conv" / "dense") layer of this config.

    `init: pytorch` matches the reference networks: the ResNet family keeps PyTorch's default
    (kaiming_uniform with a=sqrt(5): U(+-1/sqrt(fan_in)) for weights and biases); the VGG
    family runs QuadraLib's `_initialize_weights` (conv kaiming_normal, std sqrt(2/fan_in),
    zero bias; linear N(0, 0.01), zero bias). `fan_in` is in_channels * kh * kw / groups.
    """
    _, init = conv_style(config)
    if init == "keras":
        return ("he_normal" if kind == "conv" else "glorot_uniform"), "zeros"
    if config["family"] == "vgg":
        if kind == "conv":
            return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal"), "zeros"
        return keras.initializers.RandomNormal(0.0, 0.01), "zeros"
    bound = 1.0 / float(fan_in) ** 0.5
    return (keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
            keras.initializers.RandomUniform(-bound, bound))


def apply_conv(x, config, spec, filters, kernel_size, strides, name, use_bias):
    """Apply the conv described by `spec` (bias from the spec, else `use_bias`) to `x`.

    With `padding: pytorch` a conv whose PyTorch padding differs from Keras' `"same"`
    (stride > 1) gets explicit symmetric padding: `QuadConv2D(padding=((1, 1), (1, 1)))`,
    or a `ZeroPadding2D` named `{name}_pad` before a `"valid"` `Conv2D`.
    """
    bias = spec.get("use_bias", use_bias)
    padding_style, _ = conv_style(config)
    size, stride = (kernel_size, kernel_size), (strides, strides)
    padding = torch_equivalent_padding(size, stride) if padding_style == "pytorch" else "same"
    kernel_init, bias_init = initializers_for(config, "conv", x.shape[-1] * kernel_size * kernel_size)
    if spec["type"] == "quad":
        return QuadConv2D(
            filters, kernel_size, strides=strides, padding=padding,
            neuron=spec.get("neuron", "ours"), use_bias=bias,
            recompute=spec.get("recompute", False), t1_linear=spec.get("t1_linear", True),
            kernel_initializer=kernel_init, bias_initializer=bias_init, name=name,
        )(x)
    if not isinstance(padding, str):
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        padding = "valid"
    return Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=bias,
                  kernel_initializer=kernel_init, bias_initializer=bias_init, name=name)(x)


def dense_head(x, config):
    """The classifier `Dense(num_classes)` named `logits`, initialised per `config`."""
    kernel_init, bias_init = initializers_for(config, "dense", x.shape[-1])
    return keras.layers.Dense(config["num_classes"], kernel_initializer=kernel_init,
                              bias_initializer=bias_init, name="logits")(x)


def batch_norm(name):
    return BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv_bn_relu(x, config, spec, filters, strides, name, use_bias):
    """[Quad]Conv3x3 -> BN -> ReLU, with layers named `name`, `name_bn`, `name_relu`."""
    x = apply_conv(x, config, spec, filters, 3, strides, name, use_bias)
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
