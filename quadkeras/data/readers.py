"""Readers for on-disk CIFAR layouts: python pickle batches, image folders, tarballs.

Each returns `(x_train, y_train, x_test, y_test, class_names)` with uint8 NHWC images.

Example:

>>> import numpy as np, pickle, tempfile, os
>>> d = tempfile.mkdtemp()
>>> batch = {b"data": np.zeros((2, 3072), "uint8"), b"labels": [0, 1]}
>>> for f in ["data_batch_1", "test_batch"]:
...     with open(os.path.join(d, f), "wb") as fh: pickle.dump(batch, fh)
>>> read_pickle_folder(d, "cifar10")[0].shape
(2, 32, 32, 3)
"""

import io
import os
import pickle
import tarfile

import numpy as np

from quadkeras.utils.optional import tensorflow_available
from quadkeras.utils.progress import track

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
PICKLE_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": (["train"], ["test"], b"fine_labels"),
}


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def read_pickle_folder(folder, name):
    """CIFAR python-pickle layout (`cifar-10-batches-py` / `cifar-100-python`)."""
    train_files, test_files, label_key = PICKLE_FILES[name]

    def read(files):
        xs, ys = [], []
        for fname in files:
            path = os.path.join(folder, fname)
            if not os.path.exists(path):
                continue
            batch = _unpickle(path)
            xs.append(np.asarray(batch[b"data"], "uint8").reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch[label_key], "int32"))
        if not xs:
            raise FileNotFoundError(f"no {files[0]!r} in {folder}")
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    return x_train, y_train, x_test, y_test, None


def decode_images(blobs, names=None):
    """Decode a list of encoded images (JPEG/PNG/...) to one uint8 NHWC array with tf.data.

    JPEGs are decoded with libjpeg's accurate integer IDCT, as PIL (and so torchvision)
    does: bit-identical pixels to a PyTorch pipeline. TF's default fast IDCT changes 65 % of
    the pixel values of the shared CIFAR-10 copy by up to 5 levels, enough to move QuadraLib's
    QResNet14 from 81.85 % to 81.92 %.

    A corrupt or truncated image, or one whose size differs from the others, raises a
    one-line ValueError naming it (`names[i]`, else its index). Without TensorFlow, Pillow
    decodes (its JPEG decoder uses the same accurate integer IDCT: the same pixels; 16-bit
    PNGs keep each sample's high byte on both paths, see `_rgb_pixels`).
    """
    if not tensorflow_available():
        return _decode_with_pillow(blobs, names)
    import tensorflow as tf

    def decode(blob):
        return tf.cond(
            tf.io.is_jpeg(blob),
            lambda: tf.io.decode_jpeg(blob, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(blob, channels=3, expand_animations=False))

    ds = tf.data.Dataset.from_tensor_slices(tf.constant(blobs, dtype=tf.string))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    try:
        batches = track(ds.batch(1024).as_numpy_iterator(), total=-(-len(blobs) // 1024),
                        label=f"decoding {len(blobs)} images", unit_name="batch")
        return np.concatenate(list(batches), 0)
    except (tf.errors.InvalidArgumentError, ValueError):
        _raise_bad_image(blobs, names)
        raise


def _decode_with_pillow(blobs, names=None):
    """`decode_images` with Pillow (no TensorFlow); same errors."""
    from PIL import Image, UnidentifiedImageError

    names = names or [f"#{i}" for i in range(len(blobs))]
    images = []
    for blob, name in track(zip(blobs, names), total=len(blobs), label=f"decoding {len(blobs)} images",
                            unit_name="image"):
        try:
            with Image.open(io.BytesIO(blob)) as image:
                images.append(_rgb_pixels(image))
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            raise ValueError(f"Invalid image {name!r}: corrupt, truncated or not an image "
                             f"({str(err)[:120]}).") from None
        if images[-1].shape != images[0].shape:
            raise ValueError(f"Invalid image {name!r}: shape {images[-1].shape}, expected "
                             f"{images[0].shape} like the first image.")
    return np.stack(images) if images else np.zeros((0, 0, 0, 3), "uint8")


def _rgb_pixels(image):
    """An opened Pillow image as uint8 RGB pixels, the ones `tf.io.decode_png(..., dtype=uint8)`
    gives: a 16-bit sample keeps its high byte (v >> 8, libpng's 16-to-8 strip, which TF
    uses). Pillow does the same for 16-bit colour PNGs, but opens 16-bit greyscale as mode
    'I;16' (or 'I') and would clip every value above 255 to white in `convert("RGB")`."""
    if image.format == "PNG" and image.mode.startswith("I"):  # 16-bit greyscale
        grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def _raise_bad_image(blobs, names):
    """Find the first image that does not decode, or whose shape differs from the first's."""
    import tensorflow as tf

    names = names or [f"#{i}" for i in range(len(blobs))]
    shape = None
    for blob, name in zip(blobs, names):
        try:
            image = tf.io.decode_image(blob, channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError as err:
            reason = str(err.message).strip().splitlines()[0].split("}} ")[-1][:120]
            raise ValueError(f"Invalid image {name!r}: corrupt, truncated or not an image "
                             f"({reason}).") from None
        if shape is None:
            shape, first = tuple(image.shape), name
        elif tuple(image.shape) != shape:
            raise ValueError(f"Invalid image {name!r}: size {tuple(image.shape)} differs from "
                             f"{shape} of {first!r}; expected all images the same size.")


def _split_entries(entries, class_dirs=None):
    """{split: {class: [(sort_key, blob)]}} -> images, labels, class names per split.

    Every class folder (`class_dirs`: {split: set of class names found as folders}) must
    hold images and every class must be in train/: an empty or missing class would shift
    the labels or leave a class untrained.
    """
    class_dirs = class_dirs or {}
    classes = sorted(set(entries.get("train", {})) | set(entries.get("test", {}))
                     | set(class_dirs.get("train", ())) | set(class_dirs.get("test", ())))
    out = []
    for split in ("train", "test"):
        if not entries.get(split):
            raise FileNotFoundError(f"no images under {split}/<class>/")
        for cls in classes:  # a test split may lack a class; training must see every one
            empty = cls in class_dirs.get(split, ())
            if not entries[split].get(cls) and (empty or split == "train"):
                raise ValueError(f"class folder '{split}/{cls}' {'is empty' if empty else 'is missing'}; "
                                 f"expected images in every class folder and every class {classes} "
                                 "in train/.")
        blobs, labels, names = [], [], []
        for label, cls in enumerate(classes):
            for fname, blob in sorted(entries[split].get(cls, [])):
                blobs.append(blob)
                labels.append(label)
                names.append(f"{split}/{cls}/{fname}")
        out += [decode_images(blobs, names), np.asarray(labels, "int32")]
    return (*out, classes)


def _entry(rel_path):
    parts = rel_path.replace("\\", "/").strip("/").split("/")
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
        return None
    split, cls = parts[-3], parts[-2]
    return (split, cls, parts[-1]) if split in ("train", "test") else None


def _class_dir(rel_path):
    """(split, class) if `rel_path` is a `<split>/<class>` folder (at any depth), else None."""
    parts = rel_path.replace("\\", "/").strip("/").split("/")
    if len(parts) >= 2 and parts[-2] in ("train", "test"):
        return parts[-2], parts[-1]
    return None


def read_image_folder(root):
    """Image-folder layout: `root/train/<class>/*.jpg` and `root/test/<class>/*.jpg`."""
    entries, class_dirs = {}, {}
    for dirpath, _, files in os.walk(root):
        found = _class_dir(os.path.relpath(dirpath, root))
        if found:
            class_dirs.setdefault(found[0], set()).add(found[1])
        for fname in files:
            full = os.path.join(dirpath, fname)
            parsed = _entry(os.path.relpath(full, root))
            if parsed:
                with open(full, "rb") as f:
                    entries.setdefault(parsed[0], {}).setdefault(parsed[1], []).append((parsed[2], f.read()))
    return _split_entries(entries, class_dirs)


def read_tarball(path):
    """A `.tar.gz` holding the image-folder layout (read in memory, nothing extracted)."""
    entries, class_dirs = {}, {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            found = _class_dir(member.name) if member.isdir() else None
            if found:
                class_dirs.setdefault(found[0], set()).add(found[1])
            parsed = _entry(member.name) if member.isfile() else None
            if parsed:
                blob = tar.extractfile(member).read()
                entries.setdefault(parsed[0], {}).setdefault(parsed[1], []).append((parsed[2], blob))
    return _split_entries(entries, class_dirs)
