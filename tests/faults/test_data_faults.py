"""Faults in image-folder / tarball data: edited folders, empty classes, bad images, bad archives."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from quadkeras.data import load_data

pytestmark = pytest.mark.jax  # cheap (tiny PNGs), backend-independent data code


def _png(seed, size=8):
    import tensorflow as tf

    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return tf.io.encode_png(img).numpy()


TEN = tuple("abcdefghij")  # cifar10 needs 10 class folders


def _folder(root, per_class=2, classes=TEN):
    for split in ("train", "test"):
        for c, cls in enumerate(classes):
            os.makedirs(root / split / cls, exist_ok=True)
            for i in range(per_class):
                (root / split / cls / f"{i}.png").write_bytes(_png(100 * c + 10 * len(split) + i))
    return root


def _load(root, tmp_path):
    return load_data("cifar10", data_dir=str(root), cache_dir=str(tmp_path / "cache"))


def test_cache_follows_edits_deep_inside_the_folder(tmp_path):
    root = _folder(tmp_path / "imgs")
    first = _load(root, tmp_path)
    assert len(first.x_train) == 20
    mtime = os.stat(root).st_mtime_ns
    os.remove(root / "train" / "a" / "1.png")  # the top folder's mtime does not change
    assert os.stat(root).st_mtime_ns == mtime
    assert len(_load(root, tmp_path).x_train) == 19
    (root / "train" / "b" / "0.png").write_bytes(_png(999))  # same name, new content
    again = _load(root, tmp_path)
    import tensorflow as tf

    np.testing.assert_array_equal(again.x_train[1], tf.io.decode_png(_png(999)).numpy())


def test_corrupt_cache_file_is_decoded_again(tmp_path):
    root = _folder(tmp_path / "imgs")
    _load(root, tmp_path)
    (cache_file,) = (tmp_path / "cache").iterdir()
    cache_file.write_bytes(b"PK\x03\x04 truncated")
    assert len(_load(root, tmp_path).x_train) == 20


def test_empty_class_folder_is_refused_naming_it(tmp_path):
    root = _folder(tmp_path / "imgs")
    os.makedirs(root / "train" / "k")
    with pytest.raises(ValueError, match=r"class folder 'train/k' is empty"):
        _load(root, tmp_path)
    os.rmdir(root / "train" / "k")
    os.makedirs(root / "test" / "k")
    (root / "test" / "k" / "0.png").write_bytes(_png(5))  # a class training never sees
    with pytest.raises(ValueError, match=r"class folder 'train/k' is missing"):
        _load(root, tmp_path)


@pytest.mark.parametrize("fault", ["garbage", "truncated", "wrong_size"])
def test_bad_image_is_named(tmp_path, fault):
    root = _folder(tmp_path / "imgs")
    bad = root / "train" / "b" / "1.png"
    blob = {"garbage": b"not an image", "truncated": _png(7)[:40], "wrong_size": _png(7, size=9)}[fault]
    bad.write_bytes(blob)
    with pytest.raises(ValueError) as err:
        _load(root, tmp_path)
    message = str(err.value)
    assert "train/b/1.png" in message and len(message.splitlines()) == 1, message
    assert ("differs" in message) == (fault == "wrong_size")
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")


def test_truncated_tarball_is_one_line_naming_it(tmp_path):
    root = _folder(tmp_path / "imgs")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root, arcname="cifar")
    path = tmp_path / "data.tar.gz"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ValueError, match=r"Invalid data_dir=.*data.tar.gz.*could not read tarball"):
        _load(path, tmp_path)
    path.write_bytes(buf.getvalue())
    assert len(_load(path, tmp_path).x_train) == 20


@pytest.mark.parametrize("count", [3, 12])
def test_class_count_other_than_the_datasets_is_refused(tmp_path, count):
    """12 folders under --dataset=cifar10 used to end in a backend traceback (labels >= 10),
    3 folders trained a 10-class model silently: both are one line naming the folder, the
    classes found and the number expected, before anything is cached."""
    classes = tuple(f"k{i:02d}" for i in range(count))
    root = _folder(tmp_path / "imgs", per_class=1, classes=classes)
    with pytest.raises(ValueError) as err:
        _load(root, tmp_path)
    text = str(err.value)
    assert str(root) in text and f"{count} classes" in text and "expected 10" in text, text
    assert "k00" in text and len(text.splitlines()) == 1, text
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")
    tar_path = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(root, arcname="cifar")
    with pytest.raises(ValueError, match=rf"imgs\.tar\.gz.*{count} classes.*expected 10"):
        _load(tar_path, tmp_path)


def test_pickle_labels_beyond_the_datasets_classes_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for fname in ("data_batch_1", "test_batch"):
        with open(folder / fname, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 3072), "uint8"), b"labels": [3, 10]}, f)
    with pytest.raises(ValueError, match=r"cifar-10-batches-py.*labels 3\.\.10.*expected labels 0\.\.9"):
        _load(tmp_path, tmp_path)
