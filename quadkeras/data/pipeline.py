"""`make_dataset`: the input pipeline (tf.data, or NumPy batches without TensorFlow).

Images are augmented per image (zero padding + random crop, random horizontal flip, drawn
statelessly from `seed` and the image's position), scaled to [0, 1] and normalised with the
per-channel `mean` / `std` (both None: scaled only, for a model that normalises itself), then optionally mixed per batch (`keras.layers.MixUp` /
`keras.layers.CutMix`). The order of examples in a training pass is
a fixed permutation drawn from `seed`, so pass `seed=base_seed + epoch` for a reproducible
(and resumable) sequence of epochs. With MixUp/CutMix the labels become one-hot floats.
Training passes drop the last partial batch by default (`drop_remainder=None` -> `training`):
every step then has the same shape, which avoids a retrace per epoch (and a oneDNN crash
seen under TensorFlow with quadratic layers when the batch size changes mid-training).

`augment` is None / 'none', 'crop', 'flip', 'crop_flip', or a dict with keys
`pad` (int, 0 = no crop), `flip` (bool), `mixup` (alpha, 0 = off), `cutmix` (alpha, 0 = off).

`pipeline`: 'tf' (tf.data; works under every Keras backend), 'numpy'
(`quadkeras.data.array_batches.ArrayBatches`, a `keras.utils.PyDataset`: no TensorFlow
needed, no MixUp/CutMix, NumPy's random draws), or 'auto' (default: 'tf' when TensorFlow
is installed, else 'numpy').

Example:

>>> import numpy as np
>>> x = np.zeros((10, 8, 8, 1), "uint8"); y = np.arange(10) % 2
>>> ds = make_dataset(x, y, 4, training=True, mean=[0.5], std=[0.25], augment="crop_flip")
>>> [tuple(b.shape) for b, _ in ds.as_numpy_iterator()]
[(4, 8, 8, 1), (4, 8, 8, 1)]
"""

import numpy as np
import keras

from quadkeras.data.array_batches import ArrayBatches
from quadkeras.utils.optional import tensorflow_available
from quadkeras.utils.validation import check_choice

PIPELINES = ("auto", "tf", "numpy")

AUGMENT_PRESETS = {
    "none": {},
    "crop": {"pad": 4},
    "flip": {"flip": True},
    "crop_flip": {"pad": 4, "flip": True},
}
AUGMENT_KEYS = ("pad", "flip", "mixup", "cutmix")


def augment_options(augment):
    """Normalise an `augment` argument to a dict with all of AUGMENT_KEYS."""
    if augment is None:
        augment = "none"
    if isinstance(augment, str):
        augment = dict(AUGMENT_PRESETS[check_choice("augment", augment, tuple(AUGMENT_PRESETS))])
    if not isinstance(augment, dict):
        raise ValueError(f"Invalid augment={augment!r}: expected None, a preset name or a dict.")
    for key in augment:
        check_choice("augment key", key, AUGMENT_KEYS)
    opts = {"pad": 0, "flip": False, "mixup": 0.0, "cutmix": 0.0}
    opts.update(augment)
    if int(opts["pad"]) < 0 or float(opts["mixup"]) < 0 or float(opts["cutmix"]) < 0:
        raise ValueError(f"Invalid augment={augment!r}: pad, mixup and cutmix must be >= 0.")
    return opts


def _augmenter(opts, image_shape, seed):
    """A per-image function (image, index) -> image: pad + random crop, random h-flip.

    Each image gets its own crop offset and flip, drawn by TF's stateless ops from
    (seed, index of the image in the pass): the same pass on every backend and in every
    process (exact resume), and per-image like torchvision's RandomCrop(32, padding=4).
    (keras.layers.RandomCrop draws ONE offset per batch, and its seed generator is not
    reproducible inside tf.data under torch/jax; MixUp/CutMix below stay Keras layers.)
    """
    import tensorflow as tf

    h, w, c = image_shape
    pad = int(opts["pad"])
    flip = bool(opts["flip"])
    if not pad and not flip:
        return None

    def apply(image, index):
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
        if pad:
            image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
            image = tf.image.stateless_random_crop(image, (h, w, c), seed=key)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=key + [0, 1 << 40])
        return image

    return apply


def _mixer(opts, seed):
    layers = []
    if float(opts["mixup"]) > 0:
        layers.append(keras.layers.MixUp(alpha=float(opts["mixup"]), seed=seed + 2))
    if float(opts["cutmix"]) > 0:
        layers.append(keras.layers.CutMix(factor=float(opts["cutmix"]), seed=seed + 3))

    def apply(images, labels):
        data = {"images": images, "labels": labels}
        for layer in layers:
            data = layer(data, training=True)
        return data["images"], data["labels"]

    return apply if layers else None


def resolve_pipeline(pipeline):
    """'tf' or 'numpy' for a `pipeline` argument (see module docstring)."""
    check_choice("pipeline", pipeline, PIPELINES)
    if pipeline == "auto":
        return "tf" if tensorflow_available() else "numpy"
    return pipeline


def make_dataset(x, y, batch_size, training, mean, std, augment=None, seed=0, num_classes=None,
                 drop_remainder=None, one_hot=False, pipeline="auto"):
    """Batches of (float32 normalised NHWC images, labels); see module docstring.

    `one_hot=True` gives one-hot float labels (`num_classes` wide, else max label + 1); they
    are one-hot anyway with MixUp/CutMix. Returns a tf.data.Dataset, or an `ArrayBatches`.
    """
    x = np.asarray(x)
    y = np.asarray(y).reshape(-1).astype("int32")
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"Invalid x shape {x.shape} / y length {len(y)}: expected NHWC images, one label each.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"Invalid batch_size={batch_size!r}: expected a positive integer.")
    opts = augment_options(augment if training else None)
    depth = int(num_classes or (int(y.max()) + 1 if len(y) else 1))
    if (mean is None) != (std is None):
        raise ValueError(f"Invalid mean={mean!r} / std={std!r}: expected both or neither "
                         "(neither: pixels scaled to [0, 1] only, for a self-normalising model).")
    drop = training if drop_remainder is None else bool(drop_remainder)
    if drop and len(x) < batch_size:
        raise ValueError(f"Invalid batch_size={batch_size}: expected <= the {len(x)} training examples.")
    if resolve_pipeline(pipeline) == "numpy":
        if float(opts["mixup"]) > 0 or float(opts["cutmix"]) > 0:
            raise ValueError(f"Invalid augment={augment!r} for pipeline={pipeline!r}: MixUp and CutMix "
                             "need the tf.data pipeline (pip install tensorflow-cpu); expected mixup=0, cutmix=0.")
        return ArrayBatches(x, y, batch_size, training, mean, std, pad=opts["pad"], flip=opts["flip"],
                            seed=seed, one_hot=depth if one_hot else None, drop_remainder=drop)
    return _tf_dataset(x, y, batch_size, training, mean, std, opts, seed, depth, drop, one_hot)


def _tf_dataset(x, y, batch_size, training, mean, std, opts, seed, depth, drop, one_hot):
    import tensorflow as tf

    mixer = _mixer(opts, seed)
    if training:
        order = np.random.default_rng(seed).permutation(len(x))
        x, y = x[order], y[order]
    mean_t = tf.constant(np.asarray(0.0 if mean is None else mean, "float32").reshape(1, 1, 1, -1))
    std_t = tf.constant(np.asarray(1.0 if std is None else std, "float32").reshape(1, 1, 1, -1))
    augmenter = _augmenter(opts, x.shape[1:], seed)

    def prepare(images, labels):
        images = (tf.cast(images, tf.float32) / 255.0 - mean_t) / std_t
        if mixer is not None:
            images, labels = mixer(images, tf.one_hot(labels, depth))
        elif one_hot:
            labels = tf.one_hot(labels, depth)
        return images, labels

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if augmenter is not None:  # per image, before batching; stateless, so parallel is safe
        ds = ds.enumerate().map(lambda i, xy: (augmenter(xy[0], i), xy[1]),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(int(batch_size), drop_remainder=drop)
    return ds.map(prepare).prefetch(tf.data.AUTOTUNE)
