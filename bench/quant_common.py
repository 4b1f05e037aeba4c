"""Helpers shared by the quantized-QResNet14 benches (`quad_int8_qat.py`, `quad_lsq.py`).

    from quant_common import DEFAULT_CHECKPOINT, load_float_model, finetune, accuracy
"""

import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(REPO), "shared", "data", "quadralib",
                                  "qresnet14_cifar10.pth")


def load_float_model(path, zoo="qresnet14"):
    """A float Keras model from a QuadraLib `.pth` (imported) or a `.keras` file."""
    import keras

    from quadkeras.interop import import_torch_checkpoint

    return import_torch_checkpoint(path, zoo) if path.endswith(".pth") else keras.models.load_model(path)


def accuracy(logits, y):
    return float((logits.argmax(1) == y).mean())


def finetune(qmodel, x, y, epochs, lr, batch_size, seed, cosine=False, flip=True, clip=0.5,
             after_epoch=None):
    """SGD (momentum 0.9, constant or cosine LR, global gradient-norm clip `clip` as in the
    seed recipe; 0: none) fine-tune, with random horizontal flips when `flip`, batches in a
    seeded order; `after_epoch(epoch)` is called after each epoch (not timed); returns img/s."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    steps = epochs * (len(x) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(lr, max(steps, 1)) if cosine else lr
    clip = {"global_clipnorm": clip} if clip else {}
    qmodel.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, **clip),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seconds = 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        order = rng.permutation(len(x))
        flipped = (rng.random(len(x)) < 0.5) & flip
        xe = np.where(flipped[:, None, None, None], x[:, :, ::-1], x)[order]
        qmodel.fit(xe, y[order], batch_size=batch_size, epochs=1, shuffle=False, verbose=2)
        seconds += time.perf_counter() - start
        if after_epoch is not None:
            after_epoch(epoch + 1)
    return epochs * len(x) / seconds
