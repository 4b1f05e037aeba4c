"""Data sets and input pipelines: `load_data` (digits, CIFAR-10/100) and `make_dataset`.

Example:

>>> d = load_data("digits")
>>> ds = make_dataset(d.x_train, d.y_train, 64, training=True, mean=d.mean, std=d.std)
>>> images, labels = next(iter(ds))
>>> tuple(images.shape), images.dtype.name
((64, 16, 16, 1), 'float32')
"""

from quadkeras.data.cache import cache_dir
from quadkeras.data.loaders import DATASETS, load_data, shared_tarball_candidates
from quadkeras.data.pipeline import AUGMENT_PRESETS, augment_options, make_dataset
from quadkeras.data.splits import (KNOWN_STATS, DataSplits, channel_stats, make_splits,
                                   seeded_subset, split_validation, training_split)

__all__ = ["AUGMENT_PRESETS", "DATASETS", "DataSplits", "KNOWN_STATS", "augment_options",
           "cache_dir", "channel_stats", "load_data", "make_dataset", "make_splits",
           "seeded_subset", "shared_tarball_candidates", "split_validation", "training_split"]
