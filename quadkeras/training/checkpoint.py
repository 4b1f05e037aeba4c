"""Atomic checkpoints in a work_dir: `last.keras`, `best.keras` and `state.json`.

Every file is written to a temp file in the same folder and moved into place with
`os.replace`, so a reader never sees a partial file. `best.keras` is replaced only by a
strictly better metric; its metric lives in `best.json`. `state.json` holds the run config
and its hash; `check_resumable` compares it with the current config before anything is
written, so a mismatched resume fails without touching the folder.

Example:

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> _ = write_json(os.path.join(d, "state.json"), {"config": {"lr": 0.1}})
>>> check_resumable(d, {"lr": 0.2})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: Cannot resume from ... config differs in keys ['lr'] (lr: saved 0.1 vs now 0.2); ...
"""

import hashlib
import json
import math
import os

import keras
import numpy as np

from quadkeras.models.model_config import save_model as save_model_atomic
from quadkeras.utils import safe_io
from quadkeras.utils.safe_io import write_json  # noqa: F401 (re-exported)

# A work_dir's layout: the only place its file names are spelled (`work_dir.Run` reads them).
LAST, BEST, STATE, BEST_META = "last.keras", "best.keras", "state.json", "best.json"
HISTORY, SUMMARY, EVAL, TENSORBOARD = "history.csv", "summary.json", "eval.json", "tensorboard"
# Files that make a folder a run: a fresh run refuses a work_dir holding any of them.
RUN_FILES = (STATE, LAST, BEST, BEST_META, HISTORY, SUMMARY)


def config_hash(config):
    """Stable short hash of a JSON-serialisable config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_json(path, flag="work_dir file"):
    """JSON of a work_dir file; corrupt or truncated -> one-line ValueError naming it."""
    return safe_io.read_json(path, flag)


def best_metric(work_dir):
    """Metric of the current `best.keras`, or None if there is none."""
    meta = os.path.join(work_dir, BEST_META)
    if not os.path.exists(meta) or not os.path.exists(os.path.join(work_dir, BEST)):
        return None
    metric = read_json(meta).get("metric")
    return None if metric is None else float(metric)


def nonfinite_variables(model):
    """Paths of `model`'s floating-point variables (weights, BatchNorm moving statistics,
    quantizer state) holding a NaN or inf; [] when all are finite."""
    bad = []
    for variable in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad.append(variable.path)
    return bad


def save_best_if_better(model, work_dir, metric, epoch, finite=None):
    """Write `best.keras` only if `metric` is finite and strictly better (higher) and every
    model variable is finite (`finite`: that answer if the caller already has it); returns
    True if written. The complete file is written first (temp + rename), then `best.json`."""
    current = best_metric(work_dir)
    if not math.isfinite(metric) or (current is not None and not metric > current):
        return False
    if not (finite if finite is not None else not nonfinite_variables(model)):
        return False
    save_model_atomic(model, os.path.join(work_dir, BEST))
    record_best(work_dir, metric, int(epoch))
    return True


def _stamp(path):
    stat = os.stat(path)
    return [int(stat.st_size), int(stat.st_mtime_ns)]


def best_is_consistent(work_dir):
    """False if `best.keras` is not the file `best.json` describes (size + mtime stamp).

    A kill between renaming a new `best.keras` into place and writing its `best.json` leaves
    a metric that belongs to the previous best; the trainer then re-measures it on resume.
    """
    best, meta = os.path.join(work_dir, BEST), os.path.join(work_dir, BEST_META)
    if not os.path.exists(best):
        return True
    if not os.path.exists(meta):
        return False
    return read_json(meta).get("stamp") in (None, _stamp(best))


def record_best(work_dir, metric, epoch):
    """Write `best.json` for the `best.keras` now in place (metric, epoch, file stamp)."""
    write_json(os.path.join(work_dir, BEST_META), {"metric": float(metric), "epoch": epoch,
                                                   "stamp": _stamp(os.path.join(work_dir, BEST))})


def existing_run_files(work_dir):
    """The `RUN_FILES` present in `work_dir` (a fresh run must find none)."""
    return [name for name in RUN_FILES if os.path.exists(os.path.join(work_dir, name))]


def config_differences(saved, current):
    """Sorted keys whose values differ between two config dicts (numbers compare by value:
    an app's float flag 0.0 equals the library default 0)."""
    keys = set(saved) | set(current)
    return sorted(k for k in keys if json.dumps(_numbers_as_floats(saved.get(k)), default=str, sort_keys=True)
                  != json.dumps(_numbers_as_floats(current.get(k)), default=str, sort_keys=True))


def _numbers_as_floats(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_floats(v) for v in value]
    return value


def check_resumable(work_dir, config, normalize=None):
    """Raise a one-line ValueError naming the differing keys if `state.json` has another config.

    `normalize`: applied to both configs before they are compared (e.g. a key's default for a
    run saved before the key existed, an `auto` value resolved to what it stands for)."""
    state = read_json(os.path.join(work_dir, STATE), "work_dir file")
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise ValueError(f"Invalid work_dir file={os.path.join(work_dir, STATE)!r}: no 'config' "
                         "mapping; not a state.json written by quadkeras.training.")
    saved = state["config"]
    if normalize is not None:
        saved, config = normalize(saved), normalize(config)
    diff = config_differences(saved, config)
    if diff:
        shown = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {config.get(k)!r}" for k in diff[:5])
        raise ValueError(f"Cannot resume from {work_dir!r}: config differs in keys {diff} "
                         f"({shown}); use the same flags or a new --work_dir (nothing was overwritten).")
    return saved
