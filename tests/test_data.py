"""quadkeras.data: digits, synthetic image-folder / pickle / tarball CIFAR, errors, pipeline."""

import os
import pickle
import tarfile

import numpy as np
import pytest

from quadkeras.data import load_data, loaders, make_dataset
from quadkeras.data.splits import KNOWN_STATS


@pytest.mark.jax
def test_digits_contract():
    d = load_data("digits")
    assert d.name == "digits" and d.num_classes == 10
    assert d.x_train.shape == (1437, 16, 16, 1) and d.x_test.shape == (360, 16, 16, 1)
    assert d.x_train.dtype == np.uint8 and d.y_train.dtype == np.int32
    assert d.x_train.max() == 255 and set(np.unique(d.y_test)) == set(range(10))
    scaled = d.x_train / 255.0
    np.testing.assert_allclose(d.mean, [scaled.mean()], rtol=1e-6)
    np.testing.assert_allclose(d.std, [scaled.std()], rtol=1e-6)
    again = load_data("digits")
    np.testing.assert_array_equal(again.x_test, d.x_test)  # fixed split


def _images(n, seed):
    """n random images, labels covering all 10 classes (cifar10 refuses other counts)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.permutation(n) % 10


def _write_folder(root):
    import tensorflow as tf

    expected = {}
    for split, n in (("train", 20), ("test", 10)):
        x, y = _images(n, len(split))
        for i, (img, label) in enumerate(zip(x, y)):
            folder = os.path.join(root, split, f"class{label}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{i:04d}.png"), "wb") as f:
                f.write(tf.io.encode_png(img).numpy())
        order = sorted(range(n), key=lambda i: (y[i], i))
        expected[split] = (x[order], y[order])
    return expected


def _check(d, expected, name="cifar10"):
    np.testing.assert_array_equal(d.x_train, expected["train"][0])  # PNG is lossless
    np.testing.assert_array_equal(d.y_train, expected["train"][1])
    np.testing.assert_array_equal(d.x_test, expected["test"][0])
    assert d.mean == KNOWN_STATS[name][0] and d.num_classes == 10


def test_image_folder_and_tarball(tmp_path):
    root = tmp_path / "imgs"
    expected = _write_folder(str(root))
    cache = tmp_path / "cache"
    _check(load_data("cifar10", data_dir=str(root), cache_dir=str(cache)), expected)
    assert len(os.listdir(cache)) == 1  # decoded once, cached as .npz
    _check(load_data("cifar10", data_dir=str(root), cache_dir=str(cache)), expected)
    tar_path = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "test", arcname="test")
    _check(load_data("cifar10", data_dir=str(tar_path), cache_dir=str(cache)), expected)
    assert len(os.listdir(cache)) == 2


def test_pickle_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x, y = _images(5, 0)
    chw = x.transpose(0, 3, 1, 2).reshape(5, -1)
    for fname in ("data_batch_1", "data_batch_2", "test_batch"):
        with open(folder / fname, "wb") as f:
            pickle.dump({b"data": chw, b"labels": list(y)}, f)
    d = load_data("cifar10", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    np.testing.assert_array_equal(d.x_train, np.concatenate([x, x]))
    np.testing.assert_array_equal(d.y_test, y)


def test_missing_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "shared_tarball_candidates", lambda: [str(tmp_path / "none.tar.gz")])

    def offline(name):
        raise OSError("URL fetch failure: no internet")

    monkeypatch.setattr(loaders, "_keras_download", offline)
    with pytest.raises(ValueError) as err:
        load_data("cifar10", cache_dir=str(tmp_path))
    text = str(err.value)
    assert "none.tar.gz" in text and "no internet" in text and "--data_dir" in text
    assert "\n" not in text
    with pytest.raises(ValueError, match="Invalid data_dir=.*empty"):
        (tmp_path / "empty").mkdir()
        load_data("cifar100", data_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="Invalid dataset='mnist'"):
        load_data("mnist")


@pytest.mark.jax
@pytest.mark.parametrize("pipeline", ["tf", "numpy"])
def test_make_dataset_order_augment_and_mixup(pipeline):
    x = np.arange(10 * 8 * 8, dtype=np.int64).reshape(10, 8, 8, 1) % 256
    y = np.arange(10) % 3

    def batches(seed, augment=None, training=True, one_hot=False):
        ds = make_dataset(x.astype("uint8"), y, 4, training, [0.5], [0.25], augment, seed=seed,
                          num_classes=3, one_hot=one_hot, pipeline=pipeline)
        return [(np.asarray(a), np.asarray(b)) for a, b in ds]

    plain = batches(0, training=False)
    assert [b[0].shape[0] for b in plain] == [4, 4, 2]  # evaluation keeps every example
    np.testing.assert_allclose(plain[0][0], (x[:4] / 255.0 - 0.5) / 0.25, atol=1e-6)
    train0, train0b, train1 = batches(0, "crop_flip"), batches(0, "crop_flip"), batches(1, "crop_flip")
    assert len(train0) == 2  # partial batch dropped
    for (a, la), (b, lb) in zip(train0, train0b):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(train0, train1))
    hot = batches(0, "crop_flip", one_hot=True)
    np.testing.assert_array_equal(hot[0][1], np.eye(3)[train0[0][1]])
    if pipeline == "numpy":
        with pytest.raises(ValueError, match="MixUp and CutMix need the tf.data pipeline"):
            batches(0, {"mixup": 0.4})
        return
    mixed = batches(0, {"mixup": 0.4})
    assert mixed[0][1].shape == (4, 3)
    np.testing.assert_allclose(mixed[0][1].sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="Invalid augment='rotate'"):
        make_dataset(x, y, 4, True, [0.5], [0.25], augment="rotate")


@pytest.mark.jax
@pytest.mark.parametrize("pipeline", ["tf", "numpy"])
def test_crop_is_per_image_and_a_padded_window(pipeline):
    """Every image gets its own crop offset (torchvision-style), taken from the zero-padded
    image; a pass is reproducible from its seed alone (exact resume on every backend)."""
    base = (np.arange(8 * 8).reshape(8, 8) * 3 % 251 + 1).astype("uint8")  # no zeros inside
    x = np.repeat(base[None, :, :, None], 32, axis=0)
    y = np.zeros(32, "int32")

    def images(seed):
        ds = make_dataset(x, y, 32, True, [0.0], [1 / 255.0], {"pad": 2}, seed=seed, pipeline=pipeline)
        return np.concatenate([np.asarray(a) for a, _ in ds]).round().astype("int64")[..., 0]

    out = images(5)
    np.testing.assert_array_equal(out, images(5))
    padded = np.pad(base, 2).astype("int64")
    offsets = set()
    for img in out:
        found = [(i, j) for i in range(5) for j in range(5) if np.array_equal(padded[i:i + 8, j:j + 8], img)]
        assert len(found) == 1, "each output must be exactly one window of the padded image"
        offsets.add(found[0])
    assert len(offsets) > 5, f"crop offsets should vary per image, got {offsets}"


def test_pillow_decodes_the_same_pixels_as_tensorflow():
    """The TF-free reader (Pillow) and tf.io's accurate-IDCT decoder agree bit for bit."""
    import io

    from PIL import Image

    from quadkeras.data import readers

    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(4):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype="uint8")).save(buf, "JPEG", quality=75)
        blobs.append(buf.getvalue())
    np.testing.assert_array_equal(readers._decode_with_pillow(blobs), readers.decode_images(blobs))
    with pytest.raises(ValueError, match="Invalid image 'bad.jpg'"):
        readers._decode_with_pillow(blobs[:1] + [b"not a jpeg"], ["a.jpg", "bad.jpg"])



def _png16(samples):
    """A 16-bit PNG (greyscale for (H, W), RGB for (H, W, 3) uint16 samples), written with
    NumPy + zlib: Pillow writes 16-bit greyscale only."""
    import struct
    import zlib

    h, w = samples.shape[:2]
    colour = 0 if samples.ndim == 2 else 2
    rows = b"".join(b"\x00" + samples[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_pillow_decodes_16_bit_pngs_like_tensorflow():
    """16-bit PNGs: TF's decoder keeps each sample's high byte (v >> 8); the Pillow fallback
    gives the same uint8 pixels (it used to clip 16-bit greyscale to white)."""
    import io

    import keras
    from PIL import Image

    from quadkeras.data import readers

    if keras.backend.backend() != "tensorflow":
        pytest.skip("decoding is backend-independent; compared once, in the TensorFlow process")
    import tensorflow as tf

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
    grey[0, :6] = [0, 255, 256, 32767, 65280, 65535]
    rgb = rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "PNG")  # Pillow writes 16-bit greyscale ('I;16')
    blobs = [buf.getvalue(), _png16(grey), _png16(rgb)]
    assert tf.io.decode_png(blobs[0], dtype=tf.uint16).numpy()[..., 0].tolist() == grey.tolist()
    tf_pixels = readers.decode_images(blobs, ["pil_grey.png", "grey.png", "rgb.png"])
    for blob in blobs:  # decode_images is tf.io.decode_png(..., dtype=uint8) for PNGs
        np.testing.assert_array_equal(tf.io.decode_png(blob, channels=3, dtype=tf.uint8).numpy(),
                                      tf_pixels[blobs.index(blob)])
    np.testing.assert_array_equal(tf_pixels[0], np.repeat((grey >> 8)[..., None], 3, -1))
    np.testing.assert_array_equal(tf_pixels[2], rgb >> 8)
    np.testing.assert_array_equal(readers._decode_with_pillow(blobs), tf_pixels)

NO_TENSORFLOW = """
import importlib.abc, importlib.machinery, sys
class _Refuse(importlib.abc.Loader):
    def create_module(self, spec): raise ImportError("no " + spec.name)
    def exec_module(self, module): pass
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "tensorboard"):
            return importlib.machinery.ModuleSpec(name, _Refuse())
sys.meta_path.insert(0, _Hide())
import tempfile
from quadkeras.training import train
result = train({"model": "resnet20", "dataset": "digits", "epochs": 1, "max_train": 128,
                "batch_size": 32, "work_dir": tempfile.mkdtemp(), "verbose": 0})
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("TEST_ACC", result["test_acc"])
"""


def test_training_runs_without_tensorflow(tmp_path):
    """A torch-only install trains: the NumPy pipeline is picked, nothing imports TensorFlow."""
    import subprocess
    import sys

    import keras

    if keras.backend.backend() != "torch":
        pytest.skip("one backend is enough (torch: the common TF-free install)")
    env = dict(os.environ, KERAS_BACKEND="torch", QUADKERAS_CACHE=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", NO_TENSORFLOW], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TEST_ACC" in proc.stdout


def test_array_batches_shard_is_a_consecutive_slice_of_each_global_batch():
    """Multi-process training: rank r gets rows [r*B/R, (r+1)*B/R) of every global batch."""
    from quadkeras.data.array_batches import ArrayBatches

    x = np.arange(12 * 2 * 2, dtype="uint8").reshape(12, 2, 2, 1)
    y = np.arange(12)
    whole = ArrayBatches(x, y, 6, True, None, None, seed=3)
    parts = [ArrayBatches(x, y, 6, True, None, None, seed=3).shard(r, 2) for r in range(2)]
    for i in range(len(whole)):
        images, labels = whole[i]
        np.testing.assert_array_equal(np.concatenate([p[i][1] for p in parts]), labels)
        np.testing.assert_array_equal(np.concatenate([p[i][0] for p in parts]), images)
