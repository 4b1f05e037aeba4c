"""BSQ's PyTorch checkpoints (yanghr/BSQ) <-> quadkeras BSQ models, both directions.

BSQ's scripts save `{"state_dict", "Nbit_dict", "epoch", "acc", "best_acc", "optimizer"}`,
keys `module.`-prefixed, in bearpaw's CIFAR ResNet names (`quadkeras.interop.layouts`).
`Nbit_dict` is {module name: [weight bits, bias bits]} (bias bits 0 without a bias) for every
bit layer (`conv1`, `layer{s}.{b}.conv{1,2}`, `fc`). Two forms of the same model:

- bit form (after BSQ's convert, search, and `best_bin.pth.tar`): each bit layer stores
  `pweight`, `nweight` of shape (PyTorch weight shape, n) — bit planes, MSB first — and
  `scale` (1,); with a bias `pbias`, `nbias` (out, n_b) and `biasscale`. The weight is
  W = scale * bit_STE(sum_k (p_k - n_k) 2^(n-1-k) / (2^n - 1)), bit_STE clipping to [-1, 1]
  and rounding to the n-bit grid (planes may be continuous in [0, 2] mid-search). The 1x1
  `downsample` convs stay float (`weight`).
- float form (BSQ's `best_float.pth.tar`): every layer a plain `weight` / `bias`, the values
  the bit form represents, plus `Nbit_dict`.

Activations are not in the files: BSQ's ResNet applies them from its `--act` flag (ReLU6 +
per-batch max-abs quantizer at 4 bits), so an import takes `abits`.

`import_bsq_checkpoint` reads the bit form into a BSQ Keras model (`quadkeras.bsq`), planes,
scales and precisions exactly; `export_bsq_checkpoint` writes a BSQ model in either form
(through `export_torch_checkpoint`: atomic, NaN-checked); `bsq_scheme` reads a `.pth`'s
`Nbit_dict` as a {Keras layer: bits} scheme (`apps/bsq.py --dict=<file.pth>`);
`float_state` is BSQ's `to_float` on a state dict (the bit form's float weights);
`float_comparison` gives what a plain PyTorch ResNet computes from an export (for
`quadkeras.interop.verify`). Written from the reference's description (SPEC §5b), not copied.

Example:

>>> import numpy as np
>>> state = {"fc.pweight": np.array([[[1., 0.], [0., 0.]]]), "fc.nweight": np.array([[[0., 0.], [0., 1.]]]),
...          "fc.scale": np.array([3.])}
>>> float_state(state)["fc.weight"].tolist()  # 3 * [2, -1] / 3
[[2.0, -1.0]]
"""

import numpy as np
import keras

from quadkeras.bsq import BSQActivation, bsq_layers, sync_inner_weights, to_bsq, to_float, to_representation
from quadkeras.interop.layouts import (
    PREFIX, canonical_state, check_layout, detect_layout, is_bit_form, layout_key, strip_prefix)
from quadkeras.interop.torch_checkpoint import (
    _require_torch, export_torch_checkpoint, load_state_dict_into, read_state_dict)
from quadkeras.interop.torch_layout import model_family, resnet_layer_name, resnet_module_name
from quadkeras.models import build_model, load_config
from quadkeras.models.model_config import carry

PLANE_KEYS = (("pweight", "nweight", "scale", "weight"), ("pbias", "nbias", "biasscale", "bias"))


def read_fields(path):
    """The non-tensor entries of a checkpoint dict (`Nbit_dict`, `epoch`, `acc`, ...); {} for
    a raw state dict. The file is checked by `read_state_dict` first."""
    read_state_dict(path)
    torch = _require_torch(f"checkpoint {path!r}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        return {}
    return {k: v for k, v in obj.items() if k not in ("state_dict", "net", "optimizer")
            and not isinstance(v, torch.Tensor)}


def _nbit_dict(fields, source):
    nbits = fields.get("Nbit_dict")
    if nbits is None:
        return None
    ok = isinstance(nbits, dict) and all(
        isinstance(k, str) and isinstance(v, (list, tuple)) and len(v) == 2
        and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 16 for b in v)
        for k, v in nbits.items())
    if not ok:
        raise ValueError(f"Invalid checkpoint {source}: Nbit_dict must map module names to "
                         "[weight bits, bias bits] (ints 0..16), as BSQ's scripts save it.")
    return {(k[len(PREFIX):] if k.startswith(PREFIX) else k): list(v) for k, v in nbits.items()}


def bsq_scheme(path):
    """{Keras layer name: weight bits} from the `Nbit_dict` of a BSQ `.pth` (zoo ResNet names).

    A layer with 0 bits (BSQ zeroes it) has no quadkeras equivalent and is refused."""
    source = repr(path)
    nbits = _nbit_dict(read_fields(path), source)
    if not nbits:
        raise ValueError(f"Invalid checkpoint {source}: no Nbit_dict (a BSQ checkpoint written by "
                         "BSQ's convert / search / finetune holds one; a float checkpoint has no scheme).")
    scheme = {}
    for module, (bits, _) in nbits.items():
        name = resnet_layer_name(module)
        if name is None:
            raise ValueError(f"Invalid checkpoint {source}: Nbit_dict module {module!r} is not a "
                             "CIFAR ResNet conv / fc name (conv1, layer{s}.{b}.conv{1,2}, fc).")
        if bits < 1:
            raise ValueError(f"Invalid checkpoint {source}: Nbit_dict gives {module!r} 0 bits (BSQ "
                             "zeroes that layer); a zeroed layer is not supported here.")
        scheme[name] = bits
    return scheme


def _wrapped_layers(model, state):
    """{Keras layer name: plane count} of the layers `state` (canonical names) holds in bit form."""
    layers = {}
    for layer in model.layers:
        prefix = resnet_module_name(layer.name)
        if prefix is not None and f"{prefix}.pweight" in state:
            layers[layer.name] = int(np.shape(state[f"{prefix}.pweight"])[-1])
    return layers


def import_bsq_checkpoint(path, model="resnet20", abits=4, wbits=8, **overrides):
    """A BSQ Keras model holding BSQ's bit-form checkpoint `path` exactly.

    `model`: the zoo name / config of the network (a CIFAR ResNet); the class count follows
    the file. Every layer with `pweight` planes becomes a BSQ layer (`BitPlanes`) with those planes
    (continuous values kept), scale and precision (= plane count, checked against
    `Nbit_dict`); `wbits`: planes allocated per layer (the precision may grow up to 8 during a
    search; at least the file's count). `abits`: the block activations (BSQ's `--act`; 0 =
    float ReLU). Key mismatches: one line naming the closest layout and the keys.
    """
    source = repr(path)
    raw = read_state_dict(path)
    if not is_bit_form(raw):
        raise ValueError(f"Invalid checkpoint {source}: no BSQ bit planes (pweight / nweight); a float "
                         "checkpoint is converted with to_bsq (apps/bsq.py --mode=convert --from_torch).")
    state = canonical_state(raw)
    config = load_config(model)
    config.update(overrides)
    if config.get("family") != "resnet":
        raise ValueError(f"Invalid model {model!r} for BSQ's bit form: expected a CIFAR ResNet config.")
    if "linear.pweight" in state:
        config["num_classes"] = int(np.shape(state["linear.pweight"])[0])
    config.update(overrides)
    fp = build_model(config)
    scheme = _wrapped_layers(fp, state)
    planes = max([int(wbits), *scheme.values()])
    with_bias = any(k.endswith(".pbias") for k in state)
    bsq = to_bsq(fp, bits=planes, scheme=scheme, abits=abits, quantize_bias=with_bias)
    for wrapper in bsq_layers(bsq):  # bias precision = the file's plane count (the kernel's: scheme)
        key = f"{resnet_module_name(wrapper.name)}.pbias"
        if wrapper.bias_quantizer is not None and key in state:
            count = int(np.shape(state[key])[-1])
            if not 1 <= count <= planes:
                raise ValueError(f"Invalid checkpoint {source}: {key} has {count} bit planes; expected 1..{planes}.")
            wrapper.bias_quantizer.set_codes(np.zeros(tuple(wrapper.layer.bias.shape), "int64"), 1.0, count)
    load_state_dict_into(bsq, raw, source, form="bits")
    for wrapper in bsq_layers(bsq):
        sync_inner_weights(wrapper)
    nbits = _nbit_dict(read_fields(path), source)
    if nbits is not None:
        found = nbit_dict(bsq, detect_layout(strip_prefix(raw)))
        differing = [m for m in sorted(set(nbits) | set(found)) if nbits.get(m) != found.get(m)]
        if differing:
            m = differing[0]
            raise ValueError(f"Invalid checkpoint {source}: Nbit_dict gives {m!r} {nbits.get(m)} bits, its "
                             f"planes hold {found.get(m)} ([weight bits, bias bits]).")
    return bsq


def nbit_dict(model, layout="bearpaw"):
    """BSQ's `Nbit_dict` of a BSQ Keras model: {module name: [weight bits, bias bits]} for each
    BSQ layer (bias bits: the bit-quantized bias' precision, else 0)."""
    model_family(model)
    out = {}
    for wrapper in bsq_layers(model):
        module = resnet_module_name(wrapper.name)
        if module is None:
            raise ValueError(f"Invalid layer {wrapper.name!r} for BSQ's Nbit_dict: not a zoo ResNet layer.")
        bias = 0 if wrapper.bias_quantizer is None else wrapper.bias_quantizer.current_precision()
        out[layout_key(module + ".weight", layout)[: -len(".weight")]] = [wrapper.kernel_quantizer.current_precision(),
                                                                        bias]
    return out


def export_bsq_checkpoint(model, path, form="bits", layout="bearpaw", acc=None, epoch=None, check=None,
                          source=None):
    """Write a BSQ Keras model as BSQ's checkpoint dict (`form` "bits" or "float", with its
    `Nbit_dict`); returns `path`. A model in the finetune (float) representation is written
    from its codes. Bits need the bearpaw layout (BSQ's); the float form may use QuadraLib's."""
    check_layout(layout)
    if form == "bits" and layout != "bearpaw":
        raise ValueError(f"Invalid layout={layout!r} for BSQ's bit form: expected 'bearpaw' (BSQ's names).")
    if not bsq_layers(model):
        raise ValueError(f"Invalid model {source or model.name!r}: no BSQ layers (BitPlanes); "
                         "export a float model with export_torch_checkpoint.")
    if form == "bits" and any(w.kernel_quantizer.representation != "bits" for w in bsq_layers(model)):
        model = to_representation(model, "bits")
    extra = {"Nbit_dict": nbit_dict(model, layout)} if layout == "bearpaw" else None
    return export_torch_checkpoint(model, path, wrap=True, acc=acc, epoch=epoch, check=check, source=source,
                                   layout=layout, form=form, extra=extra)


def float_state(state):
    """BSQ's `to_float` on a state dict: every bit layer's planes and scale (either layout,
    canonical or not) replaced by its float `weight` (and `bias`); other entries unchanged."""
    state = dict(state)
    for key in [k for k in state if k.endswith(".pweight") or k.endswith(".pbias")]:
        prefix, leaf = key.rsplit(".", 1)
        pos, neg, scale, name = PLANE_KEYS[0] if leaf == "pweight" else PLANE_KEYS[1]
        p = np.asarray(state.pop(f"{prefix}.{pos}"), "float64")
        n = np.asarray(state.pop(f"{prefix}.{neg}"), "float64")
        s = float(np.asarray(state.pop(f"{prefix}.{scale}")).reshape(-1)[0])
        bits = p.shape[-1]
        top = 2.0 ** bits - 1
        raw = np.sum((p - n) * 2.0 ** np.arange(bits - 1, -1, -1), axis=-1) / top
        raw = np.clip(raw, -1.0, 1.0)
        state[f"{prefix}.{name}"] = (s * np.sign(raw) * np.round(np.abs(raw) * top) / top).astype("float32")
    return state


def float_comparison(model, state):
    """(Keras model, canonical float state dict) that compute the same function if an export
    of `model` is right: a BSQ model becomes its float weights with ReLU in place of the
    `BSQActivation`s (what a plain PyTorch ResNet runs); `state` (as read back) goes through
    `float_state` and `canonical_state`. A float model and state pass through (renamed)."""

    state = canonical_state(float_state(state))
    if not bsq_layers(model) and not any(isinstance(layer, BSQActivation) for layer in model.layers):
        return model, state
    plain = to_float(model)

    def relu(layer):
        if isinstance(layer, BSQActivation):
            return keras.layers.ReLU(name=layer.name)
        return layer.__class__.from_config(layer.get_config())
    relu_model = keras.models.clone_model(plain, clone_function=relu)
    relu_model.set_weights(plain.get_weights())
    return carry(model, relu_model), state
