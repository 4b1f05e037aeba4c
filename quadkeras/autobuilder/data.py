"""Held-out data for the auto-builder, preprocessed to a model's input shape.

Data come from `quadkeras.data.load_data`. `--split=val` is `quadkeras.data.training_split`:
the same seeded `val_fraction` of the (`max_train` cut of the) training split that
`quadkeras.training.train` holds out, so for a training work_dir (`heldout_options` with its
`training_config`) the probes see exactly the images the run never trained on. Images are
prepared by `quadkeras.data.prepare.prepare_images`: resized by an integer nearest-neighbour
factor (digits 16x16 -> 32x32 for QVGG-7's five pools), grey repeated to the model's
channels, pixels normalised with the dataset's mean/std unless the model normalises itself.

Example:

>>> arrays = load_arrays("digits", input_shape=(16, 16, 1))
>>> arrays["x_train"].shape[1:], arrays["num_classes"]
((16, 16, 1), 10)
>>> x, y = heldout(**heldout_options(split="val"), input_shape=(16, 16, 1))
>>> x.shape, y.dtype.name
((144, 16, 16, 1), 'int32')
"""

import numpy as np

from quadkeras.data import load_data, training_split
from quadkeras.data.prepare import input_stats, prepare_images
from quadkeras.utils.validation import check_choice

SPLITS = ("val", "test")
# Held-out split of a model that comes without a training run (zoo name, config, bare .keras).
HELDOUT_DEFAULTS = {"dataset": "digits", "val_fraction": 0.1, "seed": 0, "max_train": 0}


def load_arrays(name, input_shape, data_dir=None, normalize=True):
    """Train/test arrays prepared for a model with `input_shape` (`prepare_images`)."""
    d = load_data(name, data_dir=data_dir)
    stats = (d.mean, d.std) if normalize else (None, None)
    out = {"num_classes": int(d.num_classes), "mean": list(d.mean), "std": list(d.std)}
    for split in ("train", "test"):
        out[f"x_{split}"] = prepare_images(getattr(d, f"x_{split}"), *stats, input_shape)
        out[f"y_{split}"] = np.asarray(getattr(d, f"y_{split}"), "int32").reshape(-1)
    return out


def heldout_options(run=None, split="val", dataset=None, val_fraction=None, seed=None):
    """Keyword arguments for `heldout`: given values win, then the training run's config
    (`run`, from `quadkeras.autobuilder.training_config`), then HELDOUT_DEFAULTS.

    A run's `max_train` always applies (it defines the run's training split). `split='val'`
    for a run trained with `val_fraction=0` is refused: every training image was fitted on.

    >>> heldout_options(split="test", dataset="cifar10")["dataset"]
    'cifar10'
    >>> heldout_options({"dataset": "digits", "val_fraction": 0.0, "seed": 0, "max_train": 0,
    ...                  "work_dir": "runs/a"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Invalid split='val': the run in 'runs/a' trained on the whole training split ...
    """
    check_choice("split", split, SPLITS)
    if run is not None and dataset not in (None, run["dataset"]):
        run = None  # another data set: the run's split says nothing about it
    if run is not None and split == "val" and not run["val_fraction"]:
        raise ValueError(f"Invalid split='val': the run in {run['work_dir']!r} trained on the "
                         "whole training split (val_fraction=0); pass --split=test or retrain "
                         "with --val_fraction=0.1.")
    base = HELDOUT_DEFAULTS if run is None else {k: run[k] for k in HELDOUT_DEFAULTS}
    given = {"dataset": dataset, "val_fraction": val_fraction, "seed": seed}
    return {**base, **{k: v for k, v in given.items() if v is not None}, "split": split}


def heldout(dataset, input_shape, split="val", val_fraction=0.1, seed=0, max_train=0,
            data_dir=None, normalize=True, model=None):
    """(x, y): the held-out images prepared for a model with `input_shape`, int32 labels.

    `split='test'`: the test split. `split='val'`: `training_split(x_train, y_train,
    max_train, val_fraction, seed)`'s held-out part (only those images are prepared).
    Pixels are normalised with the data set's stats unless `normalize=False` or `model`
    standardises its own input (`quadkeras.data.prepare.input_stats`).
    """
    check_choice("split", split, SPLITS)
    d = load_data(dataset, data_dir=data_dir)
    if split == "test":
        x, y = d.x_test, d.y_test
    else:
        if not val_fraction:
            raise ValueError(f"Invalid val_fraction={val_fraction!r} for split='val': expected a "
                             "float in (0, 1).")
        _, _, x, y = training_split(d.x_train, d.y_train, max_train, val_fraction, seed)
    stats = input_stats(d, model) if normalize else (None, None)
    return prepare_images(x, *stats, input_shape), np.asarray(y, "int32").reshape(-1)
