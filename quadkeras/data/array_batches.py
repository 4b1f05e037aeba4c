"""`ArrayBatches`: the input pipeline without TensorFlow (a `keras.utils.PyDataset`).

`make_dataset(..., pipeline="numpy")` returns one of these, and `pipeline="auto"` does when
TensorFlow is not installed — a torch- or jax-only install (a GPU image, say) trains with
the same engine. Same contract as the tf.data pipeline: a fixed permutation per pass drawn
from `seed`, per-image zero padding + random crop and random horizontal flip (torchvision's
`RandomCrop(32, padding=4)` + `RandomHorizontalFlip`), pixels scaled to [0, 1] and
normalised with `mean` / `std`, the last partial batch dropped in training passes. The
random draws are NumPy's (from `(seed, batch index)`), not TF's stateless ops, so the
augmented images differ from the tf.data pipeline's — same distribution, different
samples — while staying reproducible: the same `seed` gives the same pass in every process
(exact resume). MixUp / CutMix need the tf.data pipeline.

Example:

>>> import numpy as np
>>> x = np.zeros((10, 8, 8, 1), "uint8"); y = np.arange(10) % 2
>>> ds = ArrayBatches(x, y, 4, training=True, mean=[0.5], std=[0.25], pad=2, flip=True)
>>> len(ds), ds[0][0].shape, float(ds[0][0][0, 0, 0, 0])
(2, (4, 8, 8, 1), -2.0)
"""

import keras
import numpy as np


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (float32 normalised NHWC images, labels) from uint8 arrays; see module doc.

    Args:
        x, y: uint8 NHWC images and integer labels.
        batch_size: examples per batch.
        training: shuffle (permutation from `seed`), augment, drop the last partial batch.
        mean, std: per-channel statistics on the [0, 1] scale (both None: scale only).
        pad: zero padding before the random crop (0: no crop). flip: random h-flip.
        seed: the pass's seed (the engine passes `base_seed * 100003 + epoch`).
        one_hot: number of classes to one-hot the labels to (None: integer labels).
        drop_remainder: None -> `training`.
    """

    def __init__(self, x, y, batch_size, training, mean, std, pad=0, flip=False, seed=0,
                 one_hot=None, drop_remainder=None):
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y = np.asarray(x), np.asarray(y).reshape(-1).astype("int32")
        if training:
            order = np.random.default_rng(seed).permutation(len(self.x))
            self.x, self.y = self.x[order], self.y[order]
        self.batch_size, self.training, self.seed = int(batch_size), bool(training), int(seed)
        self.pad, self.flip = (int(pad), bool(flip)) if training else (0, False)
        self.one_hot = one_hot
        shape = (1, 1, 1, -1)
        self.mean = np.asarray(0.0 if mean is None else mean, "float32").reshape(shape)
        self.std = np.asarray(1.0 if std is None else std, "float32").reshape(shape)
        drop = self.training if drop_remainder is None else bool(drop_remainder)
        self.batches = len(self.x) // self.batch_size if drop else -(-len(self.x) // self.batch_size)
        self.rank, self.share = 0, 1

    def __len__(self):
        return self.batches

    def shard(self, rank, share):
        """This process' consecutive slice of every global batch (multi-process training)."""
        self.rank, self.share = int(rank), int(share)
        return self

    def __getitem__(self, index):
        if not 0 <= index < self.batches:
            raise IndexError(index)
        start = index * self.batch_size
        images = self.x[start:start + self.batch_size]
        labels = self.y[start:start + self.batch_size]
        if self.pad or self.flip:
            images = self._augment(images, np.random.default_rng([self.seed, index]))
        images = (images.astype("float32") / 255.0 - self.mean) / self.std
        if self.one_hot:
            labels = np.eye(int(self.one_hot), dtype="float32")[labels]
        if self.share > 1:
            size = len(images) // self.share
            part = slice(self.rank * size, (self.rank + 1) * size)
            images, labels = images[part], labels[part]
        return images, labels

    def _augment(self, images, rng):
        n, h, w, _ = images.shape
        if self.pad:
            p = self.pad
            padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
            rows = rng.integers(0, 2 * p + 1, n)[:, None] + np.arange(h)
            cols = rng.integers(0, 2 * p + 1, n)[:, None] + np.arange(w)
            images = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
        if self.flip:
            flip = rng.random(n) < 0.5
            images = images.copy()
            images[flip] = images[flip, :, ::-1]
        return images
