"""PyTorch checkpoints (QuadraLib layout) <-> Keras models built by the quadkeras zoo.

`import_torch_checkpoint` reads a `.pth` state dict — raw, or wrapped as QuadraLib saves it
(`{"net": state_dict, "acc": ..., "epoch": ...}`), `module.` prefixes (DataParallel)
allowed — builds the matching zoo model (quadratic-conv bias and class count detected from
the keys) and loads every weight and BatchNorm statistic. `export_torch_checkpoint` writes
the other direction, loadable with `strict=True` into `quadkeras.interop.build_torch_model`
(or QuadraLib's own `qresnet14()` / `qvgg7()` ...). Missing, unexpected or mis-shaped keys
give a one-line error naming them and the expected shape; nothing is written then.

The zoo pads stride-2 convs as PyTorch does (`padding: pytorch`, the default), so the
imported model computes the same function as the PyTorch network.

Example:

>>> import os, tempfile
>>> from quadkeras.models import build_model
>>> path = os.path.join(tempfile.mkdtemp(), "r20.pth")
>>> export_torch_checkpoint(build_model("resnet20"), path)  # doctest: +ELLIPSIS
'.../r20.pth'
>>> import_torch_checkpoint(path, "resnet20").count_params() > 0
True
"""

import os
import zipfile

import numpy as np

from quadkeras.interop.torch_layout import COUNTER, model_family, torch_entries
from quadkeras.models import build_model, load_config
from quadkeras.utils.safe_io import write_atomic

MAX_LISTED = 5


def _require_torch(what):
    try:
        import torch  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise ValueError(f"Invalid {what}: reading/writing PyTorch checkpoints needs torch "
                         "(pip install torch).") from None
    return torch


def read_state_dict(path):
    """{key: np.ndarray} from a `.pth` (raw or `{"net": ...}`), `module.` prefixes removed."""
    torch = _require_torch(f"checkpoint {path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"Invalid checkpoint {path!r}: no such file.")
    with open(path, "rb") as f:
        head = f.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":
        raise ValueError(f"Invalid checkpoint {path!r}: not a PyTorch file (neither torch.save's "
                         "zip archive nor a pickle).")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch raises many types for a bad file)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"Invalid checkpoint {path!r}: not a readable PyTorch file ({first[:160]}).") from None
    if isinstance(obj, dict) and "net" in obj and isinstance(obj["net"], dict):
        obj = obj["net"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise ValueError(f"Invalid checkpoint {path!r}: expected a state_dict of tensors, raw or "
                         "wrapped as {'net': state_dict, ...}.")
    return {(k[len("module."):] if k.startswith("module.") else k): v.detach().cpu().numpy()
            for k, v in obj.items()}


def _listed(keys):
    keys = list(keys)
    more = f" (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def check_state_dict(entries, state, source):
    """One-line ValueError for missing / unexpected / mis-shaped keys (counters optional)."""
    expected = {e.key: e.shape for e in entries}
    missing = [k for k in expected if k not in state and not k.endswith(COUNTER)]
    if missing:
        shown = ", ".join(f"{k} {expected[k]}" for k in missing[:MAX_LISTED])
        more = f" (+{len(missing) - MAX_LISTED} more)" if len(missing) > MAX_LISTED else ""
        raise ValueError(f"Invalid checkpoint {source}: missing keys {shown}{more}.")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ValueError(f"Invalid checkpoint {source}: unexpected keys {_listed(unexpected)}.")
    for key, shape in expected.items():
        if key in state and not key.endswith(COUNTER) and tuple(state[key].shape) != shape:
            raise ValueError(f"Invalid checkpoint {source}: key {key} has shape "
                             f"{tuple(state[key].shape)}, expected {shape}.")


def load_state_dict_into(model, state, source="state_dict"):
    """Assign a PyTorch-layout state dict to a zoo-built Keras model (checked first)."""
    entries = torch_entries(model)
    check_state_dict(entries, state, source)
    for entry in entries:
        if entry.key in state:
            entry.set(state[entry.key])
    return model


def _detected_config(config, state):
    """The model config adjusted to the checkpoint: class count, quadratic-conv bias."""
    head = "linear.weight" if config["family"] == "resnet" else "classifier.weight"
    if head in state:
        config["num_classes"] = int(state[head].shape[0])
    quad_bias = any(k.endswith(".conv1.bias") and k[: -len(".conv1.bias")] + ".bn1.weight" in state
                    for k in state)
    conv = config.get("conv", {})
    if conv.get("type") == "quad" and quad_bias != bool(conv.get("use_bias", config.get("use_bias"))):
        config["conv"] = {**conv, "use_bias": quad_bias}
    return config


def import_torch_checkpoint(path, model="qresnet14", **overrides):
    """A Keras model (zoo name / config file / dict `model`) with the `.pth` weights loaded.

    `overrides` replace config keys (e.g. `input_shape=[64, 64, 3]`); `num_classes` and the
    quadratic convs' bias follow the checkpoint unless given.
    """
    state = read_state_dict(path)
    config = load_config(model)
    config.update(overrides)
    config = {**_detected_config(config, state), **overrides}
    keras_model = build_model(config)
    return load_state_dict_into(keras_model, state, repr(path))


def state_dict_of(model):
    """{key: np.ndarray} of `model` in QuadraLib's PyTorch layout."""
    return {e.key: e.get() for e in torch_entries(model)}


def export_torch_checkpoint(model, path, wrap=False, acc=None, epoch=None):
    """Write `model`'s weights as a PyTorch state dict to `path` (atomically); returns `path`.

    `wrap=True` writes QuadraLib's `{"net": state_dict, "acc": acc, "epoch": epoch}`.
    """
    torch = _require_torch(f"out={path!r}")
    model_family(model)
    state = {k: torch.from_numpy(np.array(v)) for k, v in state_dict_of(model).items()}
    obj = {"net": state, "acc": acc, "epoch": epoch} if wrap else state
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(obj, tmp))
    return path
