"""`DataSplits`: the arrays and statistics every loader returns; seeded subsets and splits.

Example:

>>> import numpy as np
>>> s = make_splits("toy", np.zeros((2, 4, 4, 1), "uint8"), [0, 1], np.zeros((1, 4, 4, 1), "uint8"), [1], 2)
>>> s.num_classes, s.x_train.dtype.name, s.y_test.dtype.name
(2, 'uint8', 'int32')
"""

import dataclasses

import numpy as np

# Per-channel statistics of images scaled to [0, 1] (the values QuadraLib's and the common
# CIFAR training scripts normalise with).
KNOWN_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


@dataclasses.dataclass
class DataSplits:
    """uint8 NHWC train/test images, int32 labels, class count and normalisation stats."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple
    name: str
    x_val: np.ndarray = None  # a held-out part of the training split (training's val_fraction)
    y_val: np.ndarray = None

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.x_train.shape[1:])


def seeded_subset(x, y, limit, seed=0):
    """(x, y) cut to `limit` examples drawn at random from `seed`, kept in split order.

    CIFAR splits read from image folders are sorted by class, so "the first N" would be a few
    classes only; a seeded draw keeps the class mix. `limit` of 0/None or >= len keeps all.

    >>> x, y = np.zeros((10, 2, 2, 1), "uint8"), np.repeat(np.arange(5), 2)
    >>> sorted(set(seeded_subset(x, y, 6)[1].tolist())) != [0, 1, 2]
    True
    """
    if not limit or limit >= len(x):
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:int(limit)])
    return x[keep], y[keep]


def split_validation(x, y, fraction=0.1, seed=0):
    """(x_train, y_train, x_val, y_val): a seeded random `fraction` held out for validation.

    The one split used by `quadkeras.training.train` (`val_fraction`, `seed`) and by the
    auto-builder's `--split=val`, so both see exactly the same held-out examples.

    >>> x, y = np.zeros((10, 2, 2, 1), "uint8"), np.arange(10)
    >>> xt, yt, xv, yv = split_validation(x, y, 0.2, seed=1)
    >>> len(yt), len(yv), sorted(set(yt) | set(yv)) == list(range(10))
    (8, 2, True)
    """
    if isinstance(fraction, bool) or not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"Invalid val_fraction={fraction!r}: expected a float in (0, 1).")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(float(fraction) * len(x))))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def training_split(x, y, max_train=0, val_fraction=0.0, seed=0):
    """(x_fit, y_fit, x_val, y_val) of a training run's training split.

    First the `max_train` subset (`seeded_subset`, seed 0), then `split_validation` with the
    run's `val_fraction` and `seed`; `x_val`/`y_val` are None when `val_fraction` is 0 (the
    run fits on the whole split). `quadkeras.training.train` and the auto-builder call this,
    so the auto-builder probes exactly the images a run held out.

    >>> x, y = np.zeros((10, 2, 2, 1), "uint8"), np.arange(10)
    >>> [None if a is None else len(a) for a in training_split(x, y, max_train=5)]
    [5, 5, None, None]
    >>> [len(a) for a in training_split(x, y, val_fraction=0.3, seed=2)]
    [7, 7, 3, 3]
    """
    x, y = seeded_subset(x, y, max_train)
    if not val_fraction:
        return x, y, None, None
    return split_validation(x, y, val_fraction, seed)


def channel_stats(x):
    """Per-channel mean and std of uint8 NHWC images scaled to [0, 1]."""
    scaled = np.asarray(x, "float64") / 255.0
    axes = tuple(range(scaled.ndim - 1))
    return tuple(float(v) for v in scaled.mean(axes)), tuple(float(v) for v in scaled.std(axes))


def make_splits(name, x_train, y_train, x_test, y_test, num_classes, stats=None):
    """Validate dtypes/shapes and build a `DataSplits` (stats computed from train if None)."""
    arrays = []
    for x in (x_train, x_test):
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"Invalid images for dataset {name!r}: expected NHWC, got shape {x.shape}.")
        arrays.append(x.astype("uint8"))
    y_train = np.asarray(y_train).reshape(-1).astype("int32")
    y_test = np.asarray(y_test).reshape(-1).astype("int32")
    if len(y_train) != len(arrays[0]) or len(y_test) != len(arrays[1]):
        raise ValueError(f"Invalid dataset {name!r}: image and label counts differ.")
    mean, std = stats if stats is not None else channel_stats(arrays[0])
    return DataSplits(arrays[0], y_train, arrays[1], y_test, int(num_classes),
                      tuple(mean), tuple(std), name)
