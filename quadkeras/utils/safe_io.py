"""Files in and out without surprises: one-line errors for unreadable inputs, atomic outputs.

Reading (every app, and the hook for new readers such as a `.pth` converter): wrap the parse in
`reading(path, flag, what)`; a missing, truncated or corrupt file then ends as ONE line
`Invalid <flag>='<path>': ...` naming the file, whatever the parser raised.

Writing: `temp_path` makes a hidden `.tmp-*` file beside the target with the permissions a
normal `open()` would give (umask, e.g. 0644; not mkstemp's 0600); `write_atomic` /
`write_json` / `write_atomic` write there and `os.replace` onto the target, so a reader,
a kill or a full disk never leaves a partial file under the real name; `clean_temp_files`
removes the orphans a kill -9 leaves; `atomic_dir` builds a whole output folder the same way.

Example:

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> p = write_json(os.path.join(d, "a.json"), {"x": 1})
>>> read_json(p, "state")["x"]
1
>>> _ = open(os.path.join(d, "b.json"), "w").write("{broken")
>>> read_json(os.path.join(d, "b.json"), "state")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: Invalid state='.../b.json': corrupt or truncated JSON file (JSONDecodeError: ...
>>> oct(os.stat(p).st_mode & 0o777) == oct(0o666 & ~current_umask())
True
"""

import contextlib
import json
import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
import zlib

TEMP_PREFIX = ".tmp-"
# What parsers raise on a truncated / corrupt / wrong-format file.
CORRUPT_FILE_ERRORS = (ValueError, KeyError, IndexError, EOFError, UnicodeDecodeError,
                       zipfile.BadZipFile, tarfile.TarError, zlib.error, pickle.UnpicklingError)
CUSTOM_OBJECT_HINTS = ("Could not locate", "Unknown", "custom_objects")


def corrupt_file_error(path, flag, what, err):
    """The one-line ValueError for an unreadable input file (also for other readers to reuse)."""
    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return ValueError(f"Invalid {flag}={os.fspath(path)!r}: corrupt or truncated {what} "
                      f"({type(err).__name__}{': ' + detail if detail else ''}).")


@contextlib.contextmanager
def reading(path, flag, what="file"):
    """Context for parsing `path`: missing / unreadable / corrupt -> one ValueError naming it.

    >>> with reading("/no/such.yaml", "model", "YAML model config"):
    ...     pass  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Invalid model='/no/such.yaml': no such YAML model config.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"Invalid {flag}={path!r}: no such {what}.")
    if os.path.isdir(path):
        raise ValueError(f"Invalid {flag}={path!r}: a folder, expected a {what}.")
    try:
        yield path
    except PermissionError as err:
        raise ValueError(f"Invalid {flag}={path!r}: cannot read the {what} ({err.strerror}).") from err
    except CORRUPT_FILE_ERRORS as err:
        if isinstance(err, ValueError) and path in str(err) and str(err).startswith("Invalid"):
            raise  # already a one-line error naming this file
        raise corrupt_file_error(path, flag, what, err) from err
    except Exception as err:  # noqa: BLE001 (YAML / TF errors have no common base class)
        if type(err).__module__.split(".")[0] in ("yaml", "tensorflow", "h5py"):
            raise corrupt_file_error(path, flag, what, err) from err
        raise


def read_json(path, flag="file", what="JSON file"):
    """`json.load` of `path` with `reading`'s one-line errors."""
    with reading(path, flag, what) as p, open(p) as f:
        return json.load(f)


def read_yaml(path, flag="file", what="YAML file"):
    """`yaml.safe_load` of `path` with `reading`'s one-line errors."""
    import yaml

    with reading(path, flag, what) as p, open(p) as f:
        return yaml.safe_load(f)


def load_keras_model(path, flag="model", **kwargs):
    """`keras.models.load_model` with quadkeras' objects registered and one-line errors.

    A corrupt or truncated `.keras` says so and names the file (Keras itself reports
    "File not found" for any file that is not a readable zip).
    """
    import keras

    import quadkeras  # noqa: F401 (registers every serializable quadkeras object)

    path = os.fspath(path)
    with reading(path, flag, ".keras file"):
        if not zipfile.is_zipfile(path):
            raise ValueError(f"Invalid {flag}={path!r}: corrupt or truncated .keras file "
                             "(not a zip archive).")
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()  # CRC of every member: catches damaged contents
        if broken is not None:
            raise ValueError(f"Invalid {flag}={path!r}: corrupt .keras file (member {broken!r} "
                             "fails its CRC check).")
        try:
            return keras.models.load_model(path, **kwargs)
        except TypeError as err:  # an intact archive Keras cannot rebuild
            text = " ".join(str(err).split())
            if any(hint in text for hint in CUSTOM_OBJECT_HINTS):
                raise ValueError(
                    f"Invalid {flag}={path!r}: it uses a custom object Keras cannot find "
                    f"({text[:200]}). Import the module that defines it (decorated with "
                    "@keras.saving.register_keras_serializable) or pass custom_objects={...}."
                ) from err
            raise


def current_umask():
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_path(folder, suffix=""):
    """A new empty `.tmp-*<suffix>` file in `folder`, mode 0666 & ~umask; returns its path."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    return tmp


def write_atomic(path, write):
    """Call `write(tmp_path)` on a temp file beside `path`, then `os.replace` it onto `path`.

    On any error (full disk, kill by exception) the temp file is removed and `path` is
    untouched. Returns `path`.
    """
    tmp = temp_path(os.path.dirname(os.path.abspath(path)), os.path.splitext(path)[1])
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json(path, data):
    """Atomically write `data` as JSON to `path`; returns `path`."""
    def dump(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
    return write_atomic(path, dump)


def clean_temp_files(folder):
    """Remove the `.tmp-*` files (not folders) a killed writer left in `folder`; returns them.

    Call it only while holding the folder's run lock: a live writer's temp file looks the same.
    """
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if name.startswith(TEMP_PREFIX) and os.path.isfile(full):
            os.remove(full)
            removed.append(name)
    return removed


@contextlib.contextmanager
def atomic_dir(out_dir, last=()):
    """Build output files in a temp folder beside `out_dir`, move them into place on success.

    Yields the temp folder. On an error it is removed and `out_dir` is left exactly as it
    was (no half-written output). On success a new `out_dir` appears in one rename; into an
    existing `out_dir` each built entry replaces its namesake in one rename (other files
    there are kept), the names in `last` (e.g. a report that says the rest is complete)
    after all others.

    >>> d = tempfile.mkdtemp()
    >>> with atomic_dir(os.path.join(d, "out")) as tmp:
    ...     _ = open(os.path.join(tmp, "f.txt"), "w").write("x")
    >>> os.listdir(os.path.join(d, "out")), sorted(os.listdir(d))
    (['f.txt'], ['out'])
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.path.basename(out_dir)}-", dir=parent)
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        yield tmp
        if not os.path.exists(out_dir):
            os.replace(tmp, out_dir)
            return
        names = sorted(os.listdir(tmp), key=lambda n: (n in last, n))
        for name in names:
            _replace_entry(os.path.join(tmp, name), os.path.join(out_dir, name), parent)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _replace_entry(src, dst, scratch):
    """`os.replace(src, dst)`; an existing folder `dst` is first moved aside and removed."""
    if os.path.isdir(dst) and not os.path.islink(dst):
        old = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}old-", dir=scratch)
        os.replace(dst, os.path.join(old, "previous"))
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
