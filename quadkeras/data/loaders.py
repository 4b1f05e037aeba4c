"""`load_data(name, data_dir=None, cache_dir=None)`: find, decode once, cache, return splits.

Where CIFAR is looked for, in order:
1. `data_dir` if given: a `.tar.gz` of the image-folder layout, an image folder
   (`train/<class>/*.jpg`, `test/<class>/*.jpg`), or a python-pickle folder
   (`cifar-10-batches-py` / `cifar-100-python`, or a folder containing one);
2. otherwise (CIFAR-10 only) the shared JPEG copy `shared/data/cifar10-jpeg.tar.gz`
   next to the repository or the working directory;
3. otherwise `keras.datasets` (needs internet).
Decoded arrays are cached as `.npz` in the cache folder, keyed by the source file.
Local data must have the dataset's classes: an image folder / tarball with another number of
class folders (or pickle labels outside 0..N-1) is refused in one line naming it.

Example:

>>> d = load_data("digits")
>>> d.name, d.x_train.shape[1:], d.num_classes
('digits', (16, 16, 1), 10)
"""

import os
import pickle
import tarfile
import zipfile
import zlib

import keras

from quadkeras.data import cache, readers
from quadkeras.data.digits import load_digits_splits
from quadkeras.data.splits import KNOWN_STATS, make_splits
from quadkeras.utils.validation import check_choice

DATASETS = ("digits", "cifar10", "cifar100")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
PICKLE_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
SHARED_TARBALL = os.path.join("shared", "data", "cifar10-jpeg.tar.gz")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shared_tarball_candidates():
    """Paths where the shared CIFAR-10 JPEG tarball may lie (repo-relative and cwd-relative)."""
    roots = [os.path.dirname(_REPO), _REPO, os.path.dirname(os.getcwd()), os.getcwd()]
    seen = []
    for root in roots:
        path = os.path.join(root, SHARED_TARBALL)
        if path not in seen:
            seen.append(path)
    return seen


def _classify(path, name):
    """(kind, path) for a user-given data_dir, or None if it holds nothing readable."""
    if os.path.isfile(path) and path.endswith((".tar.gz", ".tgz", ".tar")):
        return "tarball", path
    if not os.path.isdir(path):
        return None
    for folder in (path, os.path.join(path, PICKLE_DIRS[name])):
        marker = readers.PICKLE_FILES[name][1][0]
        if os.path.isfile(os.path.join(folder, marker)):
            return "pickle", folder
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        return "folder", path
    return None


class _NotThisDataset(ValueError):
    """Data that reads fine but does not have the dataset's classes (shown as it is)."""


def _read_local(kind, path, name):
    reader = {"tarball": readers.read_tarball, "folder": readers.read_image_folder,
              "pickle": lambda p: readers.read_pickle_folder(p, name)}[kind]
    x_train, y_train, x_test, y_test, classes = reader(path)
    _check_classes(name, classes, (y_train, y_test))
    return x_train, y_train, x_test, y_test


def _check_classes(name, classes, labels):
    """Refuse data whose classes are not the dataset's: an image folder / tarball with another
    number of class folders (12 would end in a backend error on labels >= 10, 3 would train a
    10-class model on 3), or pickle labels outside 0..N-1."""
    expected = NUM_CLASSES[name]
    if classes is not None and len(classes) != expected:
        shown = ", ".join(classes[:12]) + (f", ... ({len(classes) - 12} more)" if len(classes) > 12 else "")
        raise _NotThisDataset(f"found {len(classes)} classes under train/ ({shown}), expected "
                              f"{expected} class folders for {name!r}.")
    found = [y for y in labels if len(y)]
    low = min(int(y.min()) for y in found) if found else 0
    high = max(int(y.max()) for y in found) if found else 0
    if low < 0 or high >= expected:
        raise _NotThisDataset(f"found labels {low}..{high}, expected labels 0..{expected - 1} "
                              f"for {name!r}.")


DECODER_VERSION = "d3"  # bump when decoding changes (d2: accurate JPEG IDCT, as PIL;
# d3: the Pillow path's 16-bit greyscale PNGs as TF decodes them, not clipped to white)


def _cached_local(kind, path, name, cache_folder):
    """Decoded arrays of a local source, from the `.npz` cache when it is current.

    A corrupt cache file is decoded again; a cache that cannot be written (full disk,
    read-only folder) only costs the decode next time.
    """
    cache_file = os.path.join(cache_folder,
                              f"{name}-{kind}-{DECODER_VERSION}-{cache.source_key(path)}.npz")
    if os.path.exists(cache_file):
        try:
            arrays = cache.load_arrays(cache_file)
            return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            print(f"quadkeras.data: cache {cache_file} unreadable; decoding {path} again", flush=True)
    x_train, y_train, x_test, y_test = _read_local(kind, path, name)
    try:
        cache.save_arrays(cache_file, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    except OSError as err:
        print(f"quadkeras.data: cache not written ({err.strerror}: {cache_file})", flush=True)
    return x_train, y_train, x_test, y_test


def _read_checked(kind, path, name, cache_folder, flag):
    """`_cached_local` with any read / decode failure as one line naming `flag` and the file."""
    try:
        return _cached_local(kind, path, name, cache_folder)
    except _NotThisDataset as err:
        raise ValueError(f"Invalid {flag}={path!r} for dataset {name!r}: {err}") from None
    except (OSError, ValueError, KeyError, EOFError, tarfile.TarError, zlib.error,
            pickle.UnpicklingError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"Invalid {flag}={path!r} for dataset {name!r}: could not read {kind} "
                         f"data ({type(err).__name__}: {detail}).") from None


def _keras_download(name):
    module = {"cifar10": keras.datasets.cifar10, "cifar100": keras.datasets.cifar100}[name]
    (x_train, y_train), (x_test, y_test) = module.load_data()
    return x_train, y_train, x_test, y_test


def _missing(name, looked, reason):
    where = "; ".join(looked) or "nowhere"
    return ValueError(
        f"Dataset {name!r} not found (looked in: {where}; keras.datasets download failed: "
        f"{reason}). Provide it with --data_dir / data_dir= pointing at a .tar.gz of "
        f"train/<class>/*.jpg + test/<class>/*.jpg, such an image folder, or a "
        f"{PICKLE_DIRS[name]} pickle folder.")


def load_data(name, data_dir=None, cache_dir=None):
    """`DataSplits` for `name` in ('digits', 'cifar10', 'cifar100'); see module doc for sources."""
    name = check_choice("dataset", name, DATASETS)
    if name == "digits":
        return load_digits_splits()
    cache_folder = cache.cache_dir(cache_dir)
    if data_dir is not None:
        data_dir = os.path.abspath(os.path.expanduser(str(data_dir)))
        found = _classify(data_dir, name) if os.path.exists(data_dir) else None
        if found is None:
            raise ValueError(
                f"Invalid data_dir={data_dir!r} for dataset {name!r}: expected a .tar.gz, an image "
                f"folder with train/<class>/ and test/<class>/, or a {PICKLE_DIRS[name]} pickle folder.")
        arrays = _read_checked(*found, name, cache_folder, "data_dir")
    else:
        looked = shared_tarball_candidates() if name == "cifar10" else []
        existing = [p for p in looked if os.path.isfile(p)]
        if existing:
            arrays = _read_checked("tarball", existing[0], name, cache_folder, "shared tarball")
        else:
            try:
                arrays = _keras_download(name)
            except Exception as err:  # noqa: BLE001 (any download failure becomes one clear error)
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise _missing(name, looked, reason[:200]) from None
    return make_splits(name, *arrays, NUM_CLASSES[name], stats=KNOWN_STATS[name])
