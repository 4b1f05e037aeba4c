"""Training glue for BSQ: data (via `quadkeras.data`, digits fallback), SGD, LR steps.

Example:

>>> splits = load_splits("digits")
>>> splits.x_train.shape[1:], splits.num_classes
((16, 16, 1), 10)
"""

import types

import numpy as np
import keras


def load_splits(name="digits", data_dir=None):
    """`quadkeras.data.load_data(name)`; offline sklearn digits fallback if it is absent."""
    try:
        from quadkeras.data import load_data  # noqa: PLC0415 (owned by the training engineer)
    except ImportError:
        if name != "digits":
            raise ValueError(f"Invalid dataset={name!r}: only 'digits' without quadkeras.data.") from None
        return _digits()
    return load_data(name, data_dir=data_dir)


def _digits():
    from sklearn.datasets import load_digits  # noqa: PLC0415

    data = load_digits()
    images = np.rint(data.images * (255.0 / 16.0)).astype("uint8")
    images = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)[..., None]  # 8x8 -> 16x16x1
    order = np.random.RandomState(0).permutation(len(images))
    test, train = order[:360], order[360:]
    x_train = images[train]
    scaled = x_train.astype("float64") / 255.0
    return types.SimpleNamespace(
        x_train=x_train, y_train=data.target[train].astype("int32"),
        x_test=images[test], y_test=data.target[test].astype("int32"), num_classes=10,
        mean=[float(scaled.mean())], std=[float(scaled.std())], name="digits")


def make_datasets(splits, batch_size=64, seed=0):
    """(train, test) datasets of normalised float32 images and int labels (even batch_size)."""
    if batch_size % 2:
        raise ValueError(f"Invalid batch_size={batch_size}: expected an even positive integer.")
    try:
        from quadkeras.data import make_dataset  # noqa: PLC0415
    except ImportError:
        make_dataset = _make_dataset
    train = make_dataset(splits.x_train, splits.y_train, batch_size, True, splits.mean, splits.std, seed=seed)
    # Odd-sized batches crash the backward pass of strided 1x1 convs on this CPU stack
    # (torch 2.13 and TF 2.21 both abort with "double free"): drop the ragged last batch.
    train = train.unbatch().batch(batch_size, drop_remainder=True)
    test = make_dataset(splits.x_test, splits.y_test, batch_size, False, splits.mean, splits.std, seed=seed)
    return train, test


def _make_dataset(x, y, batch_size, training, mean, std, augment=None, seed=0):
    import tensorflow as tf  # noqa: PLC0415

    x = ((x.astype("float32") / 255.0) - np.asarray(mean, "float32")) / np.asarray(std, "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(2)


def compile_sgd(model, lr, momentum=0.9, weight_decay=0.0):
    """SGD + sparse categorical cross-entropy on logits + accuracy."""
    optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=momentum,
                                     weight_decay=weight_decay or None)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def step_schedule(lr, schedule=(), gamma=0.1):
    """LR callback: lr * gamma^(number of milestones <= epoch) (BSQ's --schedule/--gamma)."""
    milestones = sorted(int(m) for m in schedule)
    return keras.callbacks.LearningRateScheduler(
        lambda epoch: float(lr * gamma ** sum(epoch >= m for m in milestones)))
