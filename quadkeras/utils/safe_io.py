"""Files in and out without surprises: one-line errors for unreadable inputs, atomic outputs.

Reading (every app, and the hook for new readers such as a `.pth` converter): wrap the parse in
`reading(path, flag, what)`; a missing, truncated or corrupt file then ends as ONE line
`Invalid <flag>='<path>': ...` naming the file, whatever the parser raised.

Writing: `temp_path` makes a hidden `.tmp-*` file beside the target with the permissions a
normal `open()` would give (umask, e.g. 0644; not mkstemp's 0600); `write_atomic` /
`write_json` / `write_atomic` write there and `os.replace` onto the target, so a reader,
a kill or a full disk never leaves a partial file under the real name; `clean_temp_files`
removes the orphans a kill -9 leaves; `atomic_dir` builds a whole output folder beside the
target and swaps it in (the old folder or the complete new one, never a mix), and the next
`atomic_dir` removes the build folders killed processes left (`clean_stale_builds`);
`environment_error` recognises a full disk behind a library's own error.

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
import errno
import fcntl
import json
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib

import keras

from quadkeras.utils.errors import ENVIRONMENT_ERRNOS

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


def load_keras_model(path, flag="model", **kwargs):
    """`keras.models.load_model` with one-line errors. quadkeras' serializable objects are
    registered: importing this module ran `quadkeras/__init__.py`, which registers them.

    A corrupt or truncated `.keras` says so and names the file (Keras itself reports
    "File not found" for any file that is not a readable zip).
    """
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


BUILD_LOCK = ".lock"  # inside a build folder: held (flock) by the live process building it
_ENV_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # found in wrapped errors' text


def check_replaceable(out_dir, overwrite=False, flag="out_dir"):
    """Raise a one-line ValueError unless `out_dir` may receive a new whole folder: absent,
    an empty folder, or (with `overwrite`) a folder to replace."""
    out_dir = os.fspath(out_dir)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"Invalid {flag}={out_dir!r}: a file, expected a folder (nothing was written).")
    if not overwrite and os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(f"Invalid {flag}={out_dir!r}: the folder is not empty and would be replaced "
                         "whole; pass --overwrite (overwrite=True) or choose another folder "
                         "(nothing was written).")


@contextlib.contextmanager
def atomic_dir(out_dir, overwrite=False, flag="out_dir"):
    """Build a whole output folder beside `out_dir`, then swap it in: all or nothing.

    Yields an empty folder to build in, inside a sibling build folder
    `.tmp-<name>-<pid>-<hex>/` (`new/`, and the lock file `.lock` this process holds while it
    builds). On success the new folder replaces `out_dir` whole: an existing `out_dir` is
    renamed aside (to the build folder's `old/`), the new one renamed in, the old one deleted;
    so `out_dir` is at every moment the old folder or the complete new one, never a mix. On
    any error `out_dir` is left exactly as it was and the build folder is removed. An existing
    non-empty `out_dir` is refused (`check_replaceable`) unless `overwrite`.

    A killed process leaves its build folder behind; the next `atomic_dir` of the same
    `out_dir` removes it (`clean_stale_builds`): the kernel releases a dead process's lock,
    and a folder whose lock is still held belongs to a live build and is never touched.

    >>> d = tempfile.mkdtemp()
    >>> with atomic_dir(os.path.join(d, "out")) as tmp:
    ...     _ = open(os.path.join(tmp, "f.txt"), "w").write("x")
    >>> os.listdir(os.path.join(d, "out")), sorted(os.listdir(d))
    (['f.txt'], ['out'])
    >>> with atomic_dir(os.path.join(d, "out")) as tmp:
    ...     pass  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Invalid out_dir='.../out': the folder is not empty and would be replaced whole; ...
    """
    out_dir = os.path.realpath(os.fspath(out_dir))
    check_replaceable(out_dir, overwrite, flag)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    clean_stale_builds(out_dir)
    work, fd = _new_build_folder(out_dir)
    try:
        new = os.path.join(work, "new")
        os.mkdir(new)  # the mode a plain mkdir gives (umask), unlike mkdtemp's 0700
        yield new
        check_replaceable(out_dir, overwrite, flag)  # again: another process may have written it
        _swap_in(new, out_dir, os.path.join(work, "old"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(fd)  # releases the lock (after the folder is gone)


def _build_prefix(out_dir):
    return f"{TEMP_PREFIX}{os.path.basename(out_dir)}-"


def _new_build_folder(out_dir):
    """(path, locked fd) of a new `.tmp-<name>-<pid>-<hex>` folder beside `out_dir`."""
    parent = os.path.dirname(out_dir)
    while True:
        work = os.path.join(parent, f"{_build_prefix(out_dir)}{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.mkdir(work, 0o700)
            break
        except FileExistsError:
            continue
    fd = os.open(os.path.join(work, BUILD_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
    os.write(fd, str(os.getpid()).encode())
    return work, fd


def _swap_in(new, out_dir, old):
    """Rename `out_dir` (if any) to `old`, `new` to `out_dir`; the old one back on failure."""
    if not os.path.lexists(out_dir):
        os.rename(new, out_dir)
        return
    os.rename(out_dir, old)
    try:
        os.rename(new, out_dir)
    except BaseException:
        if not os.path.lexists(out_dir):
            os.rename(old, out_dir)
        raise


def clean_stale_builds(out_dir):
    """Remove the build folders of `out_dir` that killed processes left; returns their names.

    A build folder is stale when nobody holds its lock (the kernel drops a dead process's
    lock), or, without a lock file (killed right after creating it), when the pid in its name
    is no live process. A process killed between the two renames of the swap left the old
    `out_dir` in the build folder's `old/`: it is renamed back first.
    """
    out_dir = os.path.realpath(os.fspath(out_dir))
    parent = os.path.dirname(out_dir)
    pattern = re.compile(re.escape(_build_prefix(out_dir)) + r"(\d+)-[0-9a-f]{8}$")
    removed = []
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        match = pattern.match(name)
        work = os.path.join(parent, name)
        if not match or not os.path.isdir(work) or os.path.islink(work):
            continue
        fd = _try_lock(os.path.join(work, BUILD_LOCK), int(match.group(1)))
        if fd is None:
            continue  # a live build
        try:
            old = os.path.join(work, "old")
            if os.path.isdir(old) and not os.path.lexists(out_dir):
                os.rename(old, out_dir)
            shutil.rmtree(work, ignore_errors=True)
            removed.append(name)
        finally:
            if fd >= 0:
                os.close(fd)
    return removed


def _try_lock(path, pid):
    """A locked fd of `path` if no live process holds it (-1: no lock file and `pid` is
    dead), else None."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None if _alive(pid) else -1
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def environment_error(err, path=None):
    """The environment OSError (full disk, quota, read-only folder) behind a failed write, or
    None for anything else.

    `err` is such an OSError, or a library's own error that wraps one and says so in its text
    (TensorFlow's C++ file system raises `ResourceExhaustedError: ... No space left on
    device`). The result names `path` (e.g. the output folder the user gave rather than a
    temp file inside a build folder) when given, else the file `err` names, so the apps show
    it as their one line (`quadkeras.utils.errors.user_error_line`).

    >>> environment_error(RuntimeError("SaveV2: /t/x.data; No space left on device"), "/out").args
    (28, 'No space left on device')
    >>> environment_error(ValueError("bad value")) is None
    True
    """
    if isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS:
        code = err.errno
        path = path or err.filename
    else:
        text = str(err)
        code = next((c for c in _ENV_WRITE_ERRNOS if os.strerror(c) in text), None)
        if code is None:
            return None
    return OSError(code, os.strerror(code), path) if path else OSError(code, os.strerror(code))
