"""Training glue for BSQ: data via `quadkeras.data`, SGD, BSQ's step LR schedule.

Example:

>>> splits = load_splits("digits")
>>> splits.x_train.shape[1:], splits.num_classes
((16, 16, 1), 10)
"""

import keras

from quadkeras.data import load_data, make_dataset


def load_splits(name="digits", data_dir=None):
    """`quadkeras.data.load_data(name, data_dir)`."""
    return load_data(name, data_dir=data_dir)


def make_datasets(splits, batch_size=64, seed=0):
    """(train, test) datasets of normalised float32 images and int labels (even batch_size)."""
    if batch_size % 2:
        raise ValueError(f"Invalid batch_size={batch_size}: expected an even positive integer.")
    train = make_dataset(splits.x_train, splits.y_train, batch_size, True, splits.mean, splits.std, seed=seed)
    # Odd-sized batches crash the backward pass of strided 1x1 convs on this CPU stack
    # (torch 2.13 and TF 2.21 both abort with "double free"): drop the ragged last batch.
    train = train.unbatch().batch(batch_size, drop_remainder=True)
    test = make_dataset(splits.x_test, splits.y_test, batch_size, False, splits.mean, splits.std, seed=seed)
    return train, test


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
