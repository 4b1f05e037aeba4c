"""Atomic checkpoints in a work_dir: `last.keras`, `best.keras` and `state.json`.

Every file is written to a temp file in the same folder and moved into place with
`os.replace`, so a reader never sees a partial file. `best.keras` is replaced only by a
strictly better metric; its metric lives in `best.json`. `state.json` holds the run config
and its hash; `check_resumable` compares it with the current config before anything is
written, so a mismatched resume fails without touching the folder.

Example:

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> write_json(os.path.join(d, "state.json"), {"config": {"lr": 0.1}})
>>> check_resumable(d, {"lr": 0.2})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: Cannot resume from ... config differs in keys ['lr'] (lr: saved 0.1 vs now 0.2); ...
"""

import hashlib
import json
import os
import tempfile

LAST, BEST, STATE, BEST_META = "last.keras", "best.keras", "state.json", "best.json"


def config_hash(config):
    """Stable short hash of a JSON-serialisable config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _temp_path(folder, suffix):
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    return tmp


def write_json(path, data):
    """Atomically write `data` as JSON to `path`."""
    tmp = _temp_path(os.path.dirname(os.path.abspath(path)), ".json")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def save_model_atomic(model, path):
    """`model.save` to a temp `.keras` next to `path`, then `os.replace` onto `path`."""
    tmp = _temp_path(os.path.dirname(os.path.abspath(path)), ".keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def best_metric(work_dir):
    """Metric of the current `best.keras`, or None if there is none."""
    meta = os.path.join(work_dir, BEST_META)
    if not os.path.exists(meta) or not os.path.exists(os.path.join(work_dir, BEST)):
        return None
    return read_json(meta)["metric"]


def save_best_if_better(model, work_dir, metric, epoch):
    """Write `best.keras` only if `metric` is strictly better (higher); returns True if written."""
    current = best_metric(work_dir)
    if current is not None and not metric > current:
        return False
    tmp = _temp_path(work_dir, ".keras")
    try:
        model.save(tmp)  # complete file first; the old best stays in place until it exists
        os.replace(tmp, os.path.join(work_dir, BEST))
        write_json(os.path.join(work_dir, BEST_META), {"metric": float(metric), "epoch": int(epoch)})
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return True


def config_differences(saved, current):
    """Sorted keys whose values differ between two config dicts."""
    keys = set(saved) | set(current)
    return sorted(k for k in keys if json.dumps(saved.get(k), default=str, sort_keys=True)
                  != json.dumps(current.get(k), default=str, sort_keys=True))


def check_resumable(work_dir, config):
    """Raise a one-line ValueError naming the differing keys if `state.json` has another config."""
    saved = read_json(os.path.join(work_dir, STATE))["config"]
    diff = config_differences(saved, config)
    if diff:
        shown = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {config.get(k)!r}" for k in diff[:5])
        raise ValueError(f"Cannot resume from {work_dir!r}: config differs in keys {diff} "
                         f"({shown}); use the same flags or a new --work_dir (nothing was overwritten).")
    return saved
