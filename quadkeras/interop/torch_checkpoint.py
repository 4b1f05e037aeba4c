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

What `read_state_dict` checks before any weight is used (each failure is one ValueError line
naming the file and, where there is one, the key):

- the container: torch.save's zip archive has a CRC-32 per member and every one is checked
  (torch itself never checks them: one flipped byte in a tensor would load silently); a
  truncated archive is refused. torch's legacy format (`_use_new_zipfile_serialization=False`,
  torch < 1.6, e.g. BSQ's released `.pth.tar`) is a bare pickle with no checksum: it is read,
  with a `CheckpointWarning` that its integrity cannot be verified.
- dtypes: float16, bfloat16, float32 and float64 weights are converted to float32 (exact for
  the 16-bit ones, rounded for float64); sparse and quantized tensors, and integer, bool or
  complex tensors where a float weight belongs, are refused naming the key (never cast);
  BatchNorm's integer `num_batches_tracked` is accepted (and ignored).
- finiteness: a weight or statistic holding NaN/inf is refused naming the key.

`export_torch_checkpoint` refuses a model holding NaN/inf the same way, writes through a temp
file (a full disk raises `OSError(ENOSPC)` naming the target, and nothing partial remains),
and writes QuadraLib's resume fields as numbers (`acc` float, `epoch` int).

Example:

>>> import os, tempfile
>>> from quadkeras.models import build_model
>>> path = os.path.join(tempfile.mkdtemp(), "r20.pth")
>>> export_torch_checkpoint(build_model("resnet20"), path)  # doctest: +ELLIPSIS
'.../r20.pth'
>>> import_torch_checkpoint(path, "resnet20").count_params() > 0
True
"""

import errno
import io
import math
import numbers
import os
import warnings
import zipfile
import zlib

import numpy as np

from quadkeras.interop.layouts import canonical_state, check_float_form, layout_state, layouts_for, match_layout, \
    wrap_checkpoint
from quadkeras.interop.torch_layout import COUNTER, model_family, torch_entries
from quadkeras.models import build_model, load_config
from quadkeras.training import checkpoint
from quadkeras.training.work_dir import Run
from quadkeras.utils.safe_io import write_atomic

MAX_LISTED = 5
# Weight dtypes read (converted to float32: Keras' variables are float32).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# Full-disk errnos a writer may hide (torch's C++ zip writer does): re-raised naming the target.
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class CheckpointWarning(UserWarning):
    """A checkpoint was read, but part of it could not be checked (a legacy, checksum-less file)."""


def _require_torch(what):
    try:
        import torch  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise ValueError(f"Invalid {what}: reading/writing PyTorch checkpoints needs torch "
                         "(pip install torch).") from None
    return torch


def check_container(path):
    """`"zip"` (torch.save's archive, the CRC-32 of every member checked) or `"legacy"` (torch's
    pre-1.6 pickle format, which has no checksum); a one-line ValueError for anything else."""
    if not os.path.isfile(path):
        raise ValueError(f"Invalid checkpoint {path!r}: no such file.")
    with open(path, "rb") as f:
        head = f.read(2)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()  # reads every member and compares its CRC-32
        except (zipfile.BadZipFile, EOFError, zlib.error, ValueError) as err:
            detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
            raise ValueError(f"Invalid checkpoint {path!r}: corrupt zip archive ({type(err).__name__}"
                             f"{': ' + detail if detail else ''}).") from None
        if broken is not None:
            raise ValueError(f"Invalid checkpoint {path!r}: corrupt file, member {broken!r} fails its "
                             "CRC-32 check (damaged on disk or in transfer; nothing was converted).")
        return "zip"
    if head == b"PK":
        raise ValueError(f"Invalid checkpoint {path!r}: truncated or corrupt zip archive (no readable "
                         "central directory).")
    if head[:1] == b"\x80":
        return "legacy"
    raise ValueError(f"Invalid checkpoint {path!r}: not a PyTorch file (neither torch.save's "
                     "zip archive nor a pickle).")


def _float_weight(array, where):
    """`array` as float32, after checking it is a finite floating-point array (else a one-line
    ValueError starting with `where`)."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise ValueError(f"{where} has dtype {array.dtype}; expected a floating-point weight "
                         f"({', '.join(FLOAT_DTYPES)}; integers only as BatchNorm's {COUNTER}).")
    array = array.astype(np.float32, copy=False)
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise ValueError(f"{where} holds {bad} NaN/inf of its {array.size} values (as float32); "
                         "a diverged or damaged checkpoint cannot be converted.")
    return array


def _weight_array(torch, key, tensor, source):
    """A float32 array of a weight / statistic tensor (counters keep their integers); a
    one-line ValueError naming `key` for a sparse, quantized, non-float or non-finite one."""
    where = f"Invalid checkpoint {source}: key {key}"
    if tensor.layout != torch.strided:
        raise ValueError(f"{where} is a sparse tensor ({str(tensor.layout).replace('torch.', '')}); "
                         "expected a dense one (save tensor.to_dense()).")
    dtype = str(tensor.dtype).replace("torch.", "")
    if tensor.is_quantized:
        raise ValueError(f"{where} is a quantized tensor ({dtype}); expected a float one "
                         "(save tensor.dequantize()).")
    tensor = tensor.detach().cpu()
    if dtype in FLOAT_DTYPES:  # bfloat16 / float16 -> float32 is exact; NumPy has no bfloat16
        return _float_weight(tensor.to(torch.float32).numpy(), where)
    if key.endswith(COUNTER) and not tensor.is_complex() and tensor.dtype != torch.bool:
        return tensor.numpy()
    raise ValueError(f"{where} has dtype {dtype}; expected a floating-point weight "
                     f"({', '.join(FLOAT_DTYPES)}; integers only as BatchNorm's {COUNTER}).")


def read_state_dict(path):
    """{key: np.ndarray} from a `.pth` (raw or `{"net": ...}`), `module.` prefixes removed.

    Checked first (one-line ValueError naming the file and key): the archive's CRCs
    (`check_container`), every tensor's dtype and layout, NaN/inf. Weights come back as
    float32, `num_batches_tracked` counters as integers.
    """
    torch = _require_torch(f"checkpoint {path!r}")
    if check_container(path) == "legacy":
        warnings.warn(f"checkpoint {path!r} is in torch's legacy (non-zip) format, which has no "
                      "checksums: a damaged byte cannot be detected (dtype, NaN/inf and --verify "
                      "checks still run); re-save it with torch.save to get a CRC-checked file.",
                      CheckpointWarning, stacklevel=2)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch raises many types for a bad file)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"Invalid checkpoint {path!r}: not a readable PyTorch file ({first[:160]}).") from None
    if isinstance(obj, dict) and "net" in obj and isinstance(obj["net"], dict):
        obj = obj["net"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"Invalid checkpoint {path!r}: expected a state_dict of tensors, raw or "
                         "wrapped as {'net': state_dict, ...}.")
    return {(k[len("module."):] if k.startswith("module.") else k): _weight_array(torch, k, v, repr(path))
            for k, v in obj.items()}


def _listed(keys):
    keys = list(keys)
    more = f" (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def check_state_dict(entries, state, source):
    """One-line ValueError for missing / unexpected / mis-shaped keys (counters optional) and
    for a weight that is not a finite floating-point array."""
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
    for key in expected:  # arrays given directly (not via read_state_dict) are checked too
        if key in state and not key.endswith(COUNTER):
            _float_weight(state[key], f"Invalid checkpoint {source}: key {key}")


def load_state_dict_into(model, state, source="state_dict", form="float"):
    """Assign a PyTorch state dict (QuadraLib's or bearpaw's layout, `quadkeras.interop.layouts`;
    `form="bits"`: BSQ's bit form into a BSQ model) to a zoo-built Keras model (checked first)."""
    entries = torch_entries(model, form)
    state = match_layout(entries, state, source)
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
    check_float_form(state, repr(path))
    config = load_config(model)
    config.update(overrides)
    config = {**_detected_config(config, canonical_state(state)), **overrides}
    keras_model = build_model(config)
    return load_state_dict_into(keras_model, state, repr(path))


def state_dict_of(model, layout="quadralib", form="float"):
    """{key: np.ndarray} of `model` in `layout`'s PyTorch names (`quadkeras.interop.layouts`);
    `form`: BSQ layers as float weights or BSQ's bit form."""
    entries = torch_entries(model, form)
    if layout not in layouts_for(entries):
        raise ValueError(f"Invalid layout={layout!r} for model {model.name!r}: expected one of "
                         f"{', '.join(layouts_for(entries))} (bearpaw's layout is its CIFAR ResNet).")
    return layout_state({e.key: e.get() for e in entries}, layout)


def resume_fields(acc=None, epoch=None):
    """(acc, epoch) as QuadraLib's checkpoint dict holds them: its resume code runs
    `best_acc = checkpoint["acc"]` (then `if acc > best_acc`) and
    `start_epoch = checkpoint["epoch"]` (then `range(start_epoch, start_epoch + epochs)`), so
    `acc` must be a float (test accuracy in percent, 0-100) and `epoch` an int (the 0-based
    index of the last finished epoch: 199 in its released 200-epoch QResNet14). None means
    unknown: 0.0 and 0.

    >>> resume_fields(None, None), resume_fields(81.85, 7)
    ((0.0, 0), (81.85, 7))
    """
    acc = 0.0 if acc is None else acc
    epoch = 0 if epoch is None else epoch
    if isinstance(acc, bool) or not isinstance(acc, numbers.Real) or not math.isfinite(acc) \
            or not 0 <= acc <= 100:
        raise ValueError(f"Invalid acc={acc!r}: expected a number in [0, 100] (QuadraLib's test "
                         "accuracy in percent; None when unknown, written as 0.0).")
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"Invalid epoch={epoch!r}: expected an int >= 0 (QuadraLib's 0-based index "
                         "of the last finished epoch; None when unknown, written as 0).")
    return float(acc), int(epoch)


def run_resume_fields(model_path):
    """(acc, epoch) for QuadraLib's checkpoint dict from the training run that wrote
    `model_path` (a work_dir or a `.keras` file in one; see `resume_fields`).

    `best.keras`: its `best.json` (the validation accuracy it was saved for, as a percentage,
    and its epoch); another model file (`last.keras`): accuracy unknown (0.0) and the run's
    epochs done (`state.json`). Our epochs count from 1, QuadraLib's index from 0: N epochs
    done -> N - 1. A file outside a run, or a `best.json` that belongs to an earlier
    `best.keras` (a kill between the two writes): (0.0, 0) / accuracy unknown.
    """
    run = Run.of(model_path)
    if run is None:
        return resume_fields()
    model_file = run.model_file() if os.path.isdir(model_path) else os.path.abspath(model_path)
    acc, epochs = None, run.state.get("epoch")
    if os.path.basename(model_file) == checkpoint.BEST and checkpoint.best_is_consistent(run.work_dir):
        best = checkpoint.read_json(run.path(checkpoint.BEST_META))
        epochs = best.get("epoch")
        if "acc" in str(run.state.get("monitor", "val_acc")) and best.get("metric") is not None:
            acc = round(100.0 * float(best["metric"]), 4)
    epoch = max(int(epochs) - 1, 0) if isinstance(epochs, numbers.Integral) else None
    return resume_fields(acc, epoch)


def _nonfinite_key(state):
    """The first key of {key: array} holding NaN/inf, with the count, else (None, 0)."""
    for key, array in state.items():
        array = np.asarray(array)
        if array.dtype.kind == "f":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                return key, bad
    return None, 0


class _RecordingFile(io.RawIOBase):
    """A binary file for `torch.save` that keeps the OSError of a failed write: torch's C++
    zip writer turns it into `RuntimeError: ... unexpected pos ...`, which no longer says
    "No space left on device"."""

    def __init__(self, file):
        super().__init__()
        self.file, self.error = file, None

    def writable(self):
        return True

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self):
        self.file.flush()


def _torch_save(torch, obj, tmp, path):
    """`torch.save(obj)` into `tmp`; a full disk raises OSError(ENOSPC) naming `path`."""
    try:
        with open(tmp, "wb") as f:
            stream = _RecordingFile(f)
            try:
                torch.save(obj, stream)
            except RuntimeError as err:
                if stream.error is None:
                    raise
                raise stream.error from err
    except OSError as err:
        if err.errno in _FULL_DISK:
            raise OSError(err.errno, os.strerror(err.errno), path) from err
        raise


def export_torch_checkpoint(model, path, wrap=False, acc=None, epoch=None, check=None, source=None,
                            layout="quadralib", form="float", extra=None):
    """Write `model`'s weights as a PyTorch state dict to `path` (atomically); returns `path`.

    `wrap=True` writes QuadraLib's `{"net": state_dict, "acc": acc, "epoch": epoch}` with the
    types its resume code needs (`resume_fields`: a float and an int; unknown -> 0.0, 0).
    A weight holding NaN/inf is refused in one line naming its key. `check(tmp)`, if given,
    runs on the complete temp file before it replaces `path`; when it raises, `path` is left
    untouched. The write goes to a temp file beside `path`: a full disk raises
    `OSError(ENOSPC, ..., path)` and leaves no partial file. `source` names the model in
    errors (default: its name). `layout` / `form`: see `state_dict_of`; wrapped in the bearpaw
    layout: `{"state_dict": {"module." + key: ...}, "epoch", "acc", "best_acc", **extra}`
    (`layouts.wrap_checkpoint`; `extra`: e.g. BSQ's `Nbit_dict`).
    """
    torch = _require_torch(f"out={path!r}")
    model_family(model)
    arrays = state_dict_of(model, layout, form)
    key, bad = _nonfinite_key(arrays)
    if key is not None:
        raise ValueError(f"Invalid model {source or model.name!r}: weight {key} holds {bad} NaN/inf values; a "
                         f"diverged model cannot be exported (nothing was written to {path!r}).")
    state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    if wrap:
        acc, epoch = resume_fields(acc, epoch)
    obj = wrap_checkpoint(state, layout, acc, epoch, extra) if wrap else state
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(tmp):
        _torch_save(torch, obj, tmp, path)
        if check is not None:
            check(tmp)
    try:
        write_atomic(path, write)
    except OSError as err:  # e.g. no room even for the empty temp file: name the target
        if err.errno in _FULL_DISK and err.filename != path:
            raise OSError(err.errno, os.strerror(err.errno), path) from err
        raise
    return path
