"""The embedded `digits` data set: sklearn's 8x8 digits, upsampled to 16x16x1 uint8.

Offline and small (1797 images): 1437 train / 360 test, stratified, fixed split.

Example:

>>> d = load_digits_splits()
>>> d.x_train.shape, d.x_test.shape, d.num_classes
((1437, 16, 16, 1), (360, 16, 16, 1), 10)
"""

import numpy as np

from quadkeras.data.splits import make_splits

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_splits():
    """`DataSplits` for digits: values 0..16 scaled to 0..255, 2x nearest upsampling."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    images = np.round(raw.images * (255.0 / 16.0)).astype("uint8")
    images = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, raw.target, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=raw.target)
    return make_splits("digits", x_train, y_train, x_test, y_test, 10)
