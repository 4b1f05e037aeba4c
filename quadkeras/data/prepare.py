"""Model input from a data set's uint8 images: the one owner of scaling and normalisation.

`input_stats(data, model)` decides the (mean, std) a model's input is normalised with:
(None, None), scale to [0, 1] only, when the model standardises its own input (a model
config with `normalize:`, `quadkeras.models.model_config.normalizes_input`). Training's
`make_dataset`, export's calibration / parity arrays and the auto-builder's held-out probes
all take their stats from it, so no model is normalised twice.

`prepare_images(x, mean, std, input_shape)` is the NumPy form of the same arithmetic as
`make_dataset` (`(x / 255 - mean) / std` in float32), plus the auto-builder's resampling to
a model's input shape (integer nearest-neighbour upsampling, grey repeated to the model's
channels). `dataset_arrays(name, split, limit)` is both, for a `load_data` split.

Example:

>>> import numpy as np
>>> x = np.full((2, 4, 4, 1), 51, "uint8")
>>> prepare_images(x)[0, 0, 0].tolist()
[0.20000000298023224]
>>> prepare_images(x, mean=[0.1], std=[0.5], input_shape=(8, 8, 3)).shape
(2, 8, 8, 3)
>>> x, y = dataset_arrays("digits", limit=8, normalize=False)
>>> x.dtype.name, x.shape, bool(0.0 <= x.min() <= x.max() <= 1.0)
('float32', (8, 16, 16, 1), True)
"""

import numpy as np

from quadkeras.data.loaders import load_data
from quadkeras.data.splits import seeded_subset
from quadkeras.models.model_config import normalizes_input


def input_stats(data, model=None):
    """(mean, std) to normalise `data`'s images with for `model`: (None, None) (scale to
    [0, 1] only) when the model standardises its own input (a model config with
    `normalize:`); `data`'s own stats otherwise (and without a model)."""
    if model is not None:
        if normalizes_input(model):
            return None, None
    return data.mean, data.std


def prepare_images(x, mean=None, std=None, input_shape=None):
    """uint8 NHWC images -> float32 `(x / 255 - mean) / std` (mean/std None: scaled only).

    With `input_shape` (H, W, C), images are upsampled by an integer nearest-neighbour
    factor and grey images repeated to C channels (their one-channel stats too).
    """
    if (mean is None) != (std is None):
        raise ValueError(f"Invalid mean={mean!r} / std={std!r}: expected both or neither "
                         "(neither: pixels scaled to [0, 1] only, for a self-normalising model).")
    x = np.asarray(x)
    if input_shape is not None:
        x, repeat = _resample(x, tuple(input_shape))
        if mean is not None:
            mean, std = list(mean) * repeat, list(std) * repeat
    x = x.astype("float32") / 255.0
    if mean is not None:
        x = (x - np.asarray(mean, "float32")) / np.asarray(std, "float32")
    return x


def _resample(x, input_shape):
    """(x upsampled to `input_shape`'s H, W with grey repeated to its C, channel repeat)."""
    h, w, c = input_shape
    factor_h, factor_w = h // x.shape[1], w // x.shape[2]
    if factor_h * x.shape[1] != h or factor_w * x.shape[2] != w or factor_h < 1:
        raise ValueError(f"Invalid input_shape={input_shape!r}: expected an integer "
                         f"multiple of the data's {x.shape[1:3]} spatial size.")
    x = np.repeat(np.repeat(x, factor_h, axis=1), factor_w, axis=2)
    if x.shape[-1] == c:
        return x, 1
    if x.shape[-1] != 1:
        raise ValueError(f"Invalid input_shape={input_shape!r}: data has {x.shape[-1]} channels.")
    return np.repeat(x, c, axis=-1), c


def dataset_arrays(name, split="test", limit=None, normalize=True, model=None, input_shape=None,
                   data_dir=None):
    """(float32 NHWC images, int labels) of a `quadkeras.data.load_data` split.

    With `limit`, a seeded random subset of that size (`seeded_subset`: splits may be sorted
    by class). `normalize=False`, or a `model` that standardises its own input: pixels
    scaled to [0, 1] only. `input_shape`: see `prepare_images`.
    """
    d = load_data(name, data_dir=data_dir)
    x, y = (d.x_test, d.y_test) if split == "test" else (d.x_train, d.y_train)
    x, y = seeded_subset(x, y, limit)
    stats = input_stats(d, model) if normalize else (None, None)
    return prepare_images(x, *stats, input_shape=input_shape), np.asarray(y).reshape(-1)
