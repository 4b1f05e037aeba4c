"""Held-out data for the auto-builder, preprocessed to a model's input shape.

Uses `quadkeras.data.load_data` when it is available; for `digits` it falls back to
scikit-learn's `load_digits` (8x8 -> 16x16 uint8, stratified 80/20 split) so the
auto-builder works on its own. Images are resized by an integer nearest-neighbour factor
(digits 16x16 -> 32x32 for QVGG-7's five pools), grey is repeated to the model's channels,
and pixels are normalised with the dataset's mean/std unless the model normalises itself.

Example:

>>> arrays = load_arrays("digits", input_shape=(16, 16, 1))
>>> arrays["x_train"].shape[1:], arrays["num_classes"]
((16, 16, 1), 10)
"""

import numpy as np

from quadkeras.utils.validation import check_choice


def _sklearn_digits():
    from sklearn.datasets import load_digits  # noqa: PLC0415 (fallback only)
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    digits = load_digits()
    x = np.repeat(np.repeat(digits.images, 2, axis=1), 2, axis=2)
    x = np.clip(np.round(x * 255.0 / 16.0), 0, 255).astype("uint8")[..., None]
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0,
                                                        stratify=y)
    scaled = x_train.astype("float32") / 255.0
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "num_classes": 10, "mean": [float(scaled.mean())], "std": [float(scaled.std())]}


def _raw(name, data_dir):
    try:
        from quadkeras.data import load_data  # noqa: PLC0415 (owned by the training engineer)
    except ImportError:
        load_data = None
    if load_data is not None:
        d = load_data(name, data_dir=data_dir)
        return {"x_train": d.x_train, "y_train": d.y_train, "x_test": d.x_test,
                "y_test": d.y_test, "num_classes": d.num_classes, "mean": list(d.mean),
                "std": list(d.std)}
    check_choice("dataset", name, ("digits",))
    return _sklearn_digits()


def preprocess(x, input_shape, mean, std, normalize=True):
    """uint8 NHWC images -> float32 at `input_shape` (integer upsampling, grey -> channels)."""
    h, w, c = input_shape
    factor_h, factor_w = h // x.shape[1], w // x.shape[2]
    if factor_h * x.shape[1] != h or factor_w * x.shape[2] != w or factor_h < 1:
        raise ValueError(f"Invalid input_shape={tuple(input_shape)!r}: expected an integer "
                         f"multiple of the data's {x.shape[1:3]} spatial size.")
    x = np.repeat(np.repeat(x, factor_h, axis=1), factor_w, axis=2).astype("float32") / 255.0
    if x.shape[-1] != c:
        if x.shape[-1] != 1:
            raise ValueError(f"Invalid input_shape={tuple(input_shape)!r}: data has "
                             f"{x.shape[-1]} channels.")
        x = np.repeat(x, c, axis=-1)
        mean, std = list(mean) * c, list(std) * c
    if normalize:
        x = (x - np.asarray(mean, "float32")) / np.asarray(std, "float32")
    return x


def load_arrays(name, input_shape, data_dir=None, normalize=True):
    """Train/test arrays preprocessed for a model with `input_shape`."""
    raw = _raw(name, data_dir)
    out = {"num_classes": int(raw["num_classes"]), "mean": raw["mean"], "std": raw["std"]}
    for split in ("train", "test"):
        out[f"x_{split}"] = preprocess(raw[f"x_{split}"], input_shape, raw["mean"], raw["std"],
                                       normalize)
        out[f"y_{split}"] = np.asarray(raw[f"y_{split}"], "int32").reshape(-1)
    return out


def split_validation(x, y, fraction=0.1, seed=0):
    """(x_train, y_train, x_val, y_val): a seeded random `fraction` held out for validation."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"Invalid val_fraction={fraction!r}: expected a float in (0, 1).")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(fraction * len(x))))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]
