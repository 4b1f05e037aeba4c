"""Which PyTorch state-dict entry each weight of a zoo-built Keras model is (QuadraLib layout).

`torch_entries(model)` lists, in PyTorch module order, every state-dict key of the
equivalent `quadkeras.interop.torch_nets` network with a getter (Keras weights -> array in
PyTorch layout) and a setter (the inverse). Import and export both walk this one list, so
the two directions cannot disagree. NumPy only; no torch needed.

Layouts: conv kernels Keras (kh, kw, in, out) <-> PyTorch (out, in, kh, kw); dense kernels
(in, out) <-> (out, in), with the flatten order (h, w, c) <-> (c, h, w) of a VGG head whose
last feature map is larger than 1x1; BatchNorm gamma/beta/moving_mean/moving_variance <->
weight/bias/running_mean/running_var (+ `num_batches_tracked`, written as 0, ignored on
import); a quadratic `ours` layer's fused kernel, bias and per-branch BN <-> its three
`conv{1,2,3}` and `bn{1,2,3}`.

Example:

>>> from quadkeras.models import build_model
>>> entries = torch_entries(build_model("qresnet14"))
>>> [e.key for e in entries[:3]]
['conv1.weight', 'bn1.weight', 'bn1.bias']
>>> entries[-1].key, entries[-1].get().shape
('linear.bias', (10,))
"""

import dataclasses
import re
from typing import Callable

import numpy as np
import keras

from quadkeras.layers import QuadConv2D

BN_KEYS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
           ("running_var", "moving_variance"))
COUNTER = "num_batches_tracked"


@dataclasses.dataclass
class Entry:
    """One state-dict entry: its key, PyTorch-layout shape, getter and setter."""

    key: str
    shape: tuple
    get: Callable[[], np.ndarray]
    set: Callable[[np.ndarray], None]


def _np(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _var_entry(key, variable, to_torch=lambda a: a, from_torch=lambda a: a):
    def get():
        return np.ascontiguousarray(to_torch(_np(variable)))

    def set_(array):
        variable.assign(np.asarray(from_torch(np.asarray(array, "float32")), "float32"))
    return Entry(key, tuple(to_torch(np.zeros(variable.shape, "float32")).shape), get, set_)


def _counter_entry(key):
    return Entry(key, (), lambda: np.asarray(0, "int64"), lambda array: None)


def _conv_kernel(variable, key):
    return _var_entry(key, variable, lambda k: k.transpose(3, 2, 0, 1), lambda w: w.transpose(2, 3, 1, 0))


def _conv_entries(layer, prefix):
    entries = [_conv_kernel(layer.kernel, f"{prefix}.weight")]
    if layer.use_bias:
        entries.append(_var_entry(f"{prefix}.bias", layer.bias))
    return entries


def _bn_entries(layer, prefix):
    entries = [_var_entry(f"{prefix}.{t}", getattr(layer, k)) for t, k in BN_KEYS]
    return entries + [_counter_entry(f"{prefix}.{COUNTER}")]


def _slice_entry(key, variable, index, transform=None):
    """Entry for channels `index` (last axis) of a fused variable."""
    to_torch, from_torch = transform or ((lambda a: a), (lambda a: a))

    def get():
        return np.ascontiguousarray(to_torch(_np(variable)[..., index]))

    def set_(array):
        full = _np(variable).copy()
        full[..., index] = from_torch(np.asarray(array, "float32"))
        variable.assign(full)
    shape = tuple(to_torch(np.zeros(tuple(variable.shape[:-1]) + (len(index),), "float32")).shape)
    return Entry(key, shape, get, set_)


def _quad_entries(layer, prefix):
    if layer.neuron != "ours" or layer.groups != 1:
        raise ValueError(f"Invalid layer {layer.name!r} for the PyTorch (QuadraLib) layout: expected "
                         f"neuron='ours' with groups=1, got neuron={layer.neuron!r}, groups={layer.groups}.")
    kernel_t = ((lambda k: k.transpose(3, 2, 0, 1)), (lambda w: w.transpose(2, 3, 1, 0)))
    entries = []
    for i in range(3):
        out_index = layer._branch_index[i]
        entries.append(_slice_entry(f"{prefix}.conv{i + 1}.weight", layer.kernel,
                                    layer._kernel_branch_index[i], kernel_t))
        if layer.use_bias:
            entries.append(_slice_entry(f"{prefix}.conv{i + 1}.bias", layer.bias, out_index))
    for i in range(3):
        out_index = layer._branch_index[i]
        for t, k in BN_KEYS:
            entries.append(_slice_entry(f"{prefix}.bn{i + 1}.{t}", getattr(layer, f"branch_{k}"), out_index))
        entries.append(_counter_entry(f"{prefix}.bn{i + 1}.{COUNTER}"))
    return entries


def _dense_entries(layer, prefix, feature_shape=None):
    """Dense kernel (in, out) <-> weight (out, in); a (h, w, c) flatten input is reordered
    to PyTorch's (c, h, w)."""
    if feature_shape is None or int(np.prod(feature_shape[:2])) == 1:
        kernel = _var_entry(f"{prefix}.weight", layer.kernel, lambda k: k.T, lambda w: w.T)
    else:
        h, w, c = feature_shape
        kernel = _var_entry(
            f"{prefix}.weight", layer.kernel,
            lambda k: k.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(k.shape[-1], -1),
            lambda t: t.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1))
    return [kernel] + ([_var_entry(f"{prefix}.bias", layer.bias)] if layer.use_bias else [])


def _layer_entries(layer, prefix, feature_shape=None):
    if isinstance(layer, QuadConv2D):
        return _quad_entries(layer, prefix)
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
        return _conv_entries(layer, prefix)
    if isinstance(layer, keras.layers.BatchNormalization):
        return _bn_entries(layer, prefix)
    if isinstance(layer, keras.layers.Dense):
        return _dense_entries(layer, prefix, feature_shape)
    raise ValueError(f"Invalid layer {layer.name!r} ({type(layer).__name__}) for the PyTorch "
                     "(QuadraLib) layout: expected Conv2D, QuadConv2D, BatchNormalization or Dense "
                     "(export a float, unquantized model).")


_RESNET_NAMES = [
    (re.compile(r"stem_conv$"), lambda m: "conv1"),
    (re.compile(r"stem_conv_bn$"), lambda m: "bn1"),
    (re.compile(r"stage(\d+)_block(\d+)_conv(\d)$"), lambda m: f"layer{m[1]}.{int(m[2]) - 1}.conv{m[3]}"),
    (re.compile(r"stage(\d+)_block(\d+)_conv(\d)_bn$"), lambda m: f"layer{m[1]}.{int(m[2]) - 1}.bn{m[3]}"),
    (re.compile(r"stage(\d+)_block(\d+)_shortcut$"), lambda m: f"layer{m[1]}.{int(m[2]) - 1}.shortcut.0"),
    (re.compile(r"stage(\d+)_block(\d+)_shortcut_bn$"), lambda m: f"layer{m[1]}.{int(m[2]) - 1}.shortcut.1"),
    (re.compile(r"logits$"), lambda m: "linear"),
]
_WEIGHTLESS = (keras.layers.InputLayer, keras.layers.ReLU, keras.layers.Add, keras.layers.ZeroPadding2D,
               keras.layers.GlobalAveragePooling2D, keras.layers.MaxPooling2D, keras.layers.Flatten,
               keras.layers.Normalization)


def model_family(model):
    """`"resnet"` or `"vgg"` from a zoo-built model's layer names (one-line error otherwise)."""
    names = {layer.name for layer in model.layers}
    if "stem_conv" in names:
        return "resnet"
    if "conv1" in names and "flatten" in names:
        return "vgg"
    raise ValueError(f"Invalid model {model.name!r} for the PyTorch (QuadraLib) layout: expected a "
                     "ResNet or VGG built by quadkeras.models.build_model (layers stem_conv... or "
                     "conv1... + flatten).")


def _resnet_entries(model):
    entries = []
    for layer in model.layers:
        if isinstance(layer, _WEIGHTLESS):
            continue
        for pattern, prefix in _RESNET_NAMES:
            match = pattern.match(layer.name)
            if match:
                entries += _layer_entries(layer, prefix(match))
                break
        else:
            raise ValueError(f"Invalid layer {layer.name!r} ({type(layer).__name__}) for the PyTorch "
                             "ResNet layout: not a zoo ResNet layer name.")
    return entries


def _vgg_entries(model):
    entries, index = [], 0
    feature_shape = tuple(model.get_layer("flatten").input.shape[1:])
    for layer in model.layers:
        if isinstance(layer, keras.layers.MaxPooling2D):
            index += 1
        elif isinstance(layer, (keras.layers.Conv2D, QuadConv2D)):
            entries += _layer_entries(layer, f"features.{index}")
        elif isinstance(layer, keras.layers.BatchNormalization):
            entries += _layer_entries(layer, f"features.{index + 1}")
            index += 3  # conv, BN, ReLU
        elif layer.name == "logits":
            entries += _layer_entries(layer, "classifier", feature_shape)
        elif not isinstance(layer, _WEIGHTLESS):
            raise ValueError(f"Invalid layer {layer.name!r} ({type(layer).__name__}) for the PyTorch "
                             "VGG layout: expected conv / BN / ReLU / MaxPool / Flatten / Dense.")
    return entries


def torch_entries(model):
    """Every state-dict entry of `model` in QuadraLib's PyTorch layout, in module order."""
    return _resnet_entries(model) if model_family(model) == "resnet" else _vgg_entries(model)
