"""Array cache for decoded data sets: `.npz` files written atomically.

Default folder `~/.cache/quadkeras`, overridden by `$QUADKERAS_CACHE` or an explicit path.

Example:

>>> import numpy as np, tempfile
>>> d = tempfile.mkdtemp()
>>> p = save_arrays(os.path.join(d, "toy.npz"), a=np.arange(3))
>>> load_arrays(p)["a"].tolist()
[0, 1, 2]
"""

import hashlib
import os
import tempfile

import numpy as np


def cache_dir(path=None):
    """The cache folder: `path`, else `$QUADKERAS_CACHE`, else `~/.cache/quadkeras`."""
    path = path or os.environ.get("QUADKERAS_CACHE") or os.path.join("~", ".cache", "quadkeras")
    return os.path.abspath(os.path.expanduser(path))


def source_key(path):
    """Short hash identifying a source's content (cache invalidation).

    A file: its path, size and mtime (ns). A folder: the sorted listing of every file below
    it with size and mtime, so deleting, adding or editing an image in `train/<class>/` gives
    a new key (a folder's own mtime does not change when a file deep inside it does).
    """
    path = os.path.abspath(path)
    digest = hashlib.sha1(path.encode())
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            digest.update(f"D|{os.path.relpath(root, path)}".encode())
            for name in sorted(files):
                stat = os.stat(os.path.join(root, name))
                digest.update(f"|{name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    else:
        stat = os.stat(path)
        digest.update(f"|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def save_arrays(path, **arrays):
    """Write `arrays` to `path` (.npz) through a temp file + `os.replace`; returns `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_arrays(path):
    """Dict of arrays from an `.npz` written by `save_arrays`."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
