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

from quadkeras.bsq import BSQActivation, is_bsq_layer, sync_inner_weights
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


def _scale_entry(key, variable):
    """A scalar variable as PyTorch's shape-(1,) parameter (BSQ's `scale`, `biasscale`)."""
    return Entry(key, (1,), lambda: _np(variable).reshape(1).astype("float32"),
                 lambda array: variable.assign(float(np.asarray(array, "float32").reshape(-1)[0])))


def _plane_entry(key, quantizer, index, to_torch_axes, layer_name):
    """BSQ's planes (`pweight` / `nweight` / `pbias` / `nbias`): the quantizer's n active planes
    (ours: last axis, LSB first) as PyTorch's weight layout + (n,), MSB first. Setting them
    sets the precision to the array's plane count (the rest of the planes become zero)."""
    variable = quantizer.part_variable(("pos_planes", "neg_planes")[index])
    from_torch_axes = tuple(int(a) for a in np.argsort(to_torch_axes))
    n = quantizer.current_precision()

    def get():
        planes = _np(variable)[..., :n][..., ::-1]
        return np.ascontiguousarray(planes.transpose(to_torch_axes).astype("float32"))

    def set_(array):
        planes = np.asarray(array, "float32").transpose(from_torch_axes)[..., ::-1]
        count = planes.shape[-1]
        if not 1 <= count <= variable.shape[-1]:
            raise ValueError(f"Invalid {key}: {count} bit planes; layer {layer_name!r} holds 1.."
                             f"{variable.shape[-1]} (convert with more --wbits).")
        full = np.zeros(tuple(variable.shape), "float32")
        full[..., :count] = planes
        variable.assign(full)
        quantizer.part_variable("precision").assign(float(count))
    shape = tuple(np.zeros(tuple(variable.shape[:-1]) + (n,), "float32").transpose(to_torch_axes).shape)
    return Entry(key, shape, get, set_)


def _bsq_entries(wrapper, prefix, form, feature_shape=None):
    """Entries of a BSQ layer (a `QuantizeWrapper` with `BitPlanes`; see the module docstring)."""
    inner = wrapper.layer
    kernel_q, bias_q = wrapper.kernel_quantizer, wrapper.bias_quantizer
    if form == "float":
        sync_inner_weights(wrapper)  # the inner layer now holds the represented kernel / bias
        entries = _layer_entries(inner, prefix, feature_shape)
        quantized = ({f"{prefix}.conv{i}.weight" for i in (1, 2, 3)} if isinstance(inner, QuadConv2D) else
                     {f"{prefix}.weight"} | ({f"{prefix}.bias"} if bias_q is not None else set()))

        def read_only(entry):
            if entry.key not in quantized:
                return entry

            def refuse(array):
                raise ValueError(f"Invalid target layer {wrapper.name!r} (BSQ bit planes) for float key "
                                 f"{entry.key}: a float weight cannot set BSQ bit planes; import the float "
                                 "checkpoint into a float model and convert it (to_bsq), or import BSQ's "
                                 "bit form.")
            return Entry(entry.key, entry.shape, entry.get, refuse)
        return [read_only(e) for e in entries]
    if kernel_q.representation != "bits":
        raise ValueError(f"Invalid layer {wrapper.name!r} for BSQ's bit form: it holds the finetune (float) "
                         "representation; convert with quadkeras.bsq.to_representation(model, 'bits') first.")
    if isinstance(inner, keras.layers.Dense) and (feature_shape is None or int(np.prod(feature_shape[:2])) == 1):
        axes, bias_axes = (1, 0, 2), (0, 1)
    elif isinstance(inner, keras.layers.Conv2D) and not isinstance(inner, keras.layers.DepthwiseConv2D) \
            and not isinstance(inner, QuadConv2D):
        axes, bias_axes = (3, 2, 0, 1, 4), (0, 1)
    else:
        raise ValueError(f"Invalid layer {wrapper.name!r} ({type(inner).__name__} with BSQ bit planes) for "
                         "BSQ's bit form: expected Conv2D or Dense (BSQ's BitConv2d / BitLinear).")
    entries = [_plane_entry(f"{prefix}.pweight", kernel_q, 0, axes, wrapper.name),
               _plane_entry(f"{prefix}.nweight", kernel_q, 1, axes, wrapper.name),
               _scale_entry(f"{prefix}.scale", kernel_q.part_variable("scale"))]
    if bias_q is not None:
        entries += [_plane_entry(f"{prefix}.pbias", bias_q, 0, bias_axes, wrapper.name),
                    _plane_entry(f"{prefix}.nbias", bias_q, 1, bias_axes, wrapper.name),
                    _scale_entry(f"{prefix}.biasscale", bias_q.part_variable("scale"))]
    elif inner.use_bias:
        raise ValueError(f"Invalid layer {wrapper.name!r} for BSQ's bit form: its bias is float, and BSQ's "
                         "bit layers hold every bias in bits; convert with --bsq_quantize_bias "
                         "(to_bsq(quantize_bias=True)), or export the float form.")
    return entries


def _layer_entries(layer, prefix, feature_shape=None, form="float"):
    if is_bsq_layer(layer):
        return _bsq_entries(layer, prefix, form, feature_shape)
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


def _weightless(layer):
    """Layers with no state-dict entry: pads, pools, ReLU, BSQ's ReLU6 + quantizer."""
    if isinstance(layer, BSQActivation):
        if layer.pact is not None:
            raise ValueError(f"Invalid layer {layer.name!r} (BSQActivation, {layer.bits}-bit with PACT's "
                             "trained alpha) for a PyTorch layout: only abits >= 4 (ReLU6, nothing "
                             "stored) converts.")
        return True
    return isinstance(layer, _WEIGHTLESS)


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


_RESNET_LAYERS = [
    (re.compile(r"conv1$"), lambda m: "stem_conv"),
    (re.compile(r"layer(\d+)\.(\d+)\.conv(\d)$"), lambda m: f"stage{m[1]}_block{int(m[2]) + 1}_conv{m[3]}"),
    (re.compile(r"layer(\d+)\.(\d+)\.(?:shortcut|downsample)\.0$"), lambda m: f"stage{m[1]}_block{int(m[2]) + 1}_shortcut"),
    (re.compile(r"(?:linear|fc)$"), lambda m: "logits"),
]


def resnet_layer_name(module_name):
    """The zoo ResNet layer name of a PyTorch conv / linear module (either layout), or None.

    >>> resnet_layer_name("layer2.0.downsample.0"), resnet_layer_name("fc")
    ('stage2_block1_shortcut', 'logits')
    """
    for pattern, name in _RESNET_LAYERS:
        match = pattern.match(module_name)
        if match:
            return name(match)
    return None


def resnet_module_name(layer_name):
    """The PyTorch module name (canonical) of a zoo ResNet layer, or None."""
    for pattern, prefix in _RESNET_NAMES:
        match = pattern.match(layer_name)
        if match:
            return prefix(match)
    return None


def _resnet_entries(model, form="float"):
    entries = []
    for layer in model.layers:
        if _weightless(layer):
            continue
        prefix = resnet_module_name(layer.name)
        if prefix is not None:
            entries += _layer_entries(layer, prefix, form=form)
        else:
            raise ValueError(f"Invalid layer {layer.name!r} ({type(layer).__name__}) for the PyTorch "
                             "ResNet layout: not a zoo ResNet layer name.")
    return entries


def _vgg_entries(model, form="float"):
    entries, index = [], 0
    feature_shape = tuple(model.get_layer("flatten").input.shape[1:])
    for layer in model.layers:
        if isinstance(layer, keras.layers.MaxPooling2D):
            index += 1
        elif isinstance(layer, (keras.layers.Conv2D, QuadConv2D)) or _is_wrapped(layer, (keras.layers.Conv2D, QuadConv2D)):
            entries += _layer_entries(layer, f"features.{index}", form=form)
        elif isinstance(layer, keras.layers.BatchNormalization):
            entries += _layer_entries(layer, f"features.{index + 1}")
            index += 3  # conv, BN, ReLU
        elif layer.name == "logits":
            entries += _layer_entries(layer, "classifier", feature_shape, form=form)
        elif not _weightless(layer):
            raise ValueError(f"Invalid layer {layer.name!r} ({type(layer).__name__}) for the PyTorch "
                             "VGG layout: expected conv / BN / ReLU / MaxPool / Flatten / Dense.")
    return entries


def _is_wrapped(layer, kind):
    inner = getattr(layer, "layer", None)
    return inner is not None and isinstance(inner, kind)


FORMS = ("float", "bits")


def torch_entries(model, form="float"):
    """Every state-dict entry of `model` in QuadraLib's PyTorch layout (canonical names), in
    module order; `form`: how BSQ layers appear ("float" or BSQ's "bits")."""
    if form not in FORMS:
        raise ValueError(f"Invalid form={form!r}: expected one of {', '.join(FORMS)}.")
    if model_family(model) == "resnet":
        return _resnet_entries(model, form)
    return _vgg_entries(model, form)
