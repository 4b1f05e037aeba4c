"""Export faults: a failure mid-export leaves out_dir exactly as it was (TensorFlow only)."""

import errno
import os

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="export runs under the TensorFlow backend")


def test_failure_mid_export_leaves_out_dir_as_it_was(tmp_path, monkeypatch):
    from quadkeras.export import convert, export_model

    out = tmp_path / "out"
    os.makedirs(out / "saved_model")
    (out / "keep.txt").write_text("user file")
    (out / "model_float.tflite").write_bytes(b"previous export")
    (out / "saved_model" / "old.pb").write_bytes(b"old")
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())

    def disk_full(model, path, **kw):
        os.makedirs(path)
        open(os.path.join(path, "partial.pb"), "wb").close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(convert, "write_saved_model", disk_full)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(OSError):
        export_model(model, str(out), formats=("litert_float",), verbose=False)
    after = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    assert after == before
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temp folder left beside it
    monkeypatch.undo()
    report = export_model(model, str(out), formats=("litert_float",), verbose=False)
    assert report["formats"]["litert_float"]["path"] == str(out / "model_float.tflite")
    assert (out / "keep.txt").read_text() == "user file"  # other files in out_dir are kept
    assert not (out / "saved_model" / "old.pb").exists()  # an exported entry is replaced whole
    assert (out / "model_float.tflite").read_bytes() != b"previous export"
    assert report["formats"]["litert_float"]["size_bytes"] > 0
