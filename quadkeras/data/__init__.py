"""Data sets and model input: `load_data` (digits, CIFAR-10/100), `make_dataset` (tf.data
batches) and `dataset_arrays` / `prepare_images` (the same input as NumPy arrays).

Example:

>>> d = load_data("digits")
>>> ds = make_dataset(d.x_train, d.y_train, 64, training=True, mean=d.mean, std=d.std)
>>> images, labels = next(iter(ds))
>>> tuple(images.shape), images.dtype.name
((64, 16, 16, 1), 'float32')
"""

from quadkeras.data.loaders import DATASETS, load_data
from quadkeras.data.pipeline import AUGMENT_PRESETS, make_dataset
from quadkeras.data.prepare import dataset_arrays, prepare_images
from quadkeras.data.splits import (DataSplits, make_splits, seeded_subset, split_validation,
                                   training_split)

# Caching, tarball discovery and channel statistics stay in their modules.
__all__ = ["AUGMENT_PRESETS", "DATASETS", "DataSplits", "dataset_arrays", "load_data",
           "make_dataset", "make_splits", "prepare_images", "seeded_subset", "split_validation",
           "training_split"]
