"""What a PyTorch checkpoint must pass before it converts, and what `--verify` decides.

Corrupt archives (CRC), legacy files (warned), weight dtypes (float16/32/64 and bfloat16
converted; sparse, quantized, integer, bool, complex refused naming the key), NaN/inf (refused
both ways), QuadraLib's resume fields written as numbers, a full disk on export, and the
forward check's verdict. Checkpoints are built here with torch.save on the tiny ResNet of
`test_torch_interop`; the app-level (subprocess) checks are in
`tests/faults/test_convert_faults.py`.
"""

import errno
import io
import os
import struct
import zipfile

import numpy as np
import pytest
import keras

torch = pytest.importorskip("torch")

from quadkeras.interop import (  # noqa: E402
    export_torch_checkpoint,
    import_torch_checkpoint,
    load_state_dict_into,
    read_state_dict,
    state_dict_of,
)
from quadkeras.interop import torch_checkpoint  # noqa: E402
from quadkeras.interop.torch_checkpoint import CheckpointWarning, resume_fields, run_resume_fields  # noqa: E402
from quadkeras.interop.verify import EPS32, SAFETY, check_logits, layer_depth, readback_differences  # noqa: E402
from quadkeras.models import build_model  # noqa: E402
from tests.test_torch_interop import RESNET, resnet_state  # noqa: E402


def _save(state, path, **kwargs):
    torch.save({"net": state, "acc": 90.0, "epoch": 3}, path, **kwargs)
    return str(path)


def _damage(path, member_suffix, count):
    """Flip `count` bytes at the start of the data of the archive member ending in `member_suffix`."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    blob = bytearray(open(path, "rb").read())
    name_len, extra_len = struct.unpack("<HH", blob[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for i in range(min(count, info.file_size)):
        blob[start + i] ^= 0x01  # the lowest mantissa bit: a float32 weight moves by ~1 ulp
    open(path, "wb").write(bytes(blob))
    return info.filename


@pytest.mark.parametrize("count", [1, 400])
def test_a_damaged_archive_is_refused_naming_the_member(count, tmp_path):
    path = _save(resnet_state(), tmp_path / "c.pth")
    with zipfile.ZipFile(path) as archive:  # the largest tensor: layer2.0's conv weights
        biggest = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    member = _damage(path, biggest.filename, count)
    with pytest.raises(ValueError, match=rf"corrupt file, member '{member}' fails its CRC-32 check") as err:
        import_torch_checkpoint(path, RESNET)
    assert "\n" not in str(err.value)
    blob = open(path, "rb").read()
    (tmp_path / "t.pth").write_bytes(blob[: len(blob) - 30])  # central directory cut off
    with pytest.raises(ValueError, match="truncated or corrupt zip archive"):
        read_state_dict(str(tmp_path / "t.pth"))


def test_a_legacy_file_is_read_with_a_warning_that_it_cannot_be_checked(tmp_path):
    state = resnet_state()
    path = _save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    with pytest.warns(CheckpointWarning, match="legacy .*no checksums"):
        read = read_state_dict(path)
    np.testing.assert_array_equal(read["linear.weight"], state["linear.weight"].numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_float_weights_of_any_width_are_converted_to_float32(dtype, tmp_path):
    state = resnet_state()
    state = {k: (v if k.endswith("tracked") else v.to(dtype)) for k, v in state.items()}
    state["bn1.num_batches_tracked"] = torch.tensor(7, dtype=torch.int32)  # integer buffers are fine
    read = read_state_dict(_save(state, tmp_path / "w.pth"))
    assert read["linear.weight"].dtype == np.float32
    np.testing.assert_array_equal(read["linear.weight"], state["linear.weight"].float().numpy())
    model = import_torch_checkpoint(str(tmp_path / "w.pth"), RESNET)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("logits").kernel),
                                  state["linear.weight"].float().numpy().T)


@pytest.mark.parametrize("value, match", [
    (lambda w: w.to_sparse(), r"key linear\.weight is a sparse tensor \(sparse_coo\)"),
    (lambda w: torch.quantize_per_tensor(w, 0.1, 0, torch.qint8), r"key linear\.weight is a quantized tensor \(qint8\)"),
    (lambda w: (w * 10).int(), r"key linear\.weight has dtype int32; expected a floating-point weight"),
    (lambda w: w > 0, r"key linear\.weight has dtype bool"),
    (lambda w: w.to(torch.complex64), r"key linear\.weight has dtype complex64"),
    (lambda w: w.index_fill(1, torch.tensor([0]), float("nan")), r"key linear\.weight holds 5 NaN/inf of its 40 values"),
    (lambda w: w.index_fill(0, torch.tensor([2]), float("-inf")), r"key linear\.weight holds 8 NaN/inf"),
    (lambda w: w.double() * 1e300, r"key linear\.weight holds 40 NaN/inf .*as float32"),
])
def test_odd_tensors_are_refused_in_one_line_naming_the_key(value, match, tmp_path):
    state = resnet_state()
    state["linear.weight"] = value(state["linear.weight"])
    path = _save(state, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=match) as err:
        import_torch_checkpoint(path, RESNET)
    assert "\n" not in str(err.value) and "odd.pth" in str(err.value)


def test_arrays_given_directly_are_checked_too():
    model = build_model(RESNET)
    state = state_dict_of(model)
    state["linear.bias"] = np.arange(5, dtype="int32")  # would be cast silently by assign
    with pytest.raises(ValueError, match=r"key linear\.bias has dtype int32"):
        load_state_dict_into(build_model(RESNET), state)


def test_export_refuses_a_non_finite_model_and_writes_numbers_for_quadralib(tmp_path):
    model = build_model(RESNET)
    path = str(tmp_path / "out.pth")
    kernel = model.get_layer("logits").kernel
    good = keras.ops.convert_to_numpy(kernel)
    kernel.assign(np.where(np.arange(good.size).reshape(good.shape) == 3, np.nan, good).astype("float32"))
    with pytest.raises(ValueError, match=r"weight linear\.weight holds 1 NaN/inf values.*nothing was written"):
        export_torch_checkpoint(model, path, wrap=True)
    assert os.listdir(tmp_path) == []
    kernel.assign(good)
    saved = torch.load(export_torch_checkpoint(model, path, wrap=True), weights_only=True)
    assert (saved["acc"], saved["epoch"]) == (0.0, 0)
    assert type(saved["acc"]) is float and type(saved["epoch"]) is int
    saved = torch.load(export_torch_checkpoint(model, path, wrap=True, acc=81.85, epoch=199), weights_only=True)
    assert (saved["acc"], saved["epoch"]) == (81.85, 199)
    for acc, epoch in ((float("nan"), 1), (101, 1), (50, 1.5), (50, -1), ("90", 1)):
        with pytest.raises(ValueError, match="Invalid (acc|epoch)="):
            resume_fields(acc, epoch)


def test_resume_fields_come_from_the_training_run(tmp_path):
    from quadkeras.models.model_config import save_model
    from quadkeras.training import checkpoint

    model = build_model(RESNET)
    save_model(model, str(tmp_path / "best.keras"))
    save_model(model, str(tmp_path / "last.keras"))
    checkpoint.record_best(str(tmp_path), 0.8123, 5)
    checkpoint.write_json(str(tmp_path / "state.json"), {"epoch": 7, "monitor": "val_acc", "config": {}})
    assert run_resume_fields(str(tmp_path)) == (81.23, 4)  # work_dir -> best.keras
    assert run_resume_fields(str(tmp_path / "best.keras")) == (81.23, 4)
    assert run_resume_fields(str(tmp_path / "last.keras")) == (0.0, 6)  # its accuracy is unknown
    save_model(model, str(tmp_path / "best.keras"))  # best.json now describes an older file
    assert run_resume_fields(str(tmp_path / "best.keras")) == (0.0, 6)
    os.remove(tmp_path / "state.json")
    assert run_resume_fields(str(tmp_path / "best.keras")) == (0.0, 0)  # not a run


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after 2,000 bytes."""

    def write(self, data):
        if self.tell() + len(memoryview(data)) > 2000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_full_disk_on_export_is_one_oserror_naming_the_target_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_checkpoint, "open", lambda path, mode: _FullDisk(path, "w"), raising=False)
    path = str(tmp_path / "out.pth")
    with pytest.raises(OSError) as err:
        export_torch_checkpoint(build_model(RESNET), path)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, path)
    from quadkeras.utils.errors import user_error_line

    assert user_error_line(err.value).startswith(f"cannot write {path!r}: No space left on device")
    assert os.listdir(tmp_path) == []  # the temp file is gone


def test_verify_passes_the_same_network_and_fails_another_padding_or_a_non_finite_forward():
    state = state_dict_of(build_model(RESNET))
    model = load_state_dict_into(build_model(RESNET), state)
    assert layer_depth(model) == 1 + 2 * 6 + 1 + 1  # stem, 6 quadratic convs, shortcut, head
    result = check_logits(model, state, batch=2)
    assert result.passed and result.rtol == SAFETY * layer_depth(model) * EPS32
    assert result.difference < result.limit / 30  # the tolerance is not tight
    same = load_state_dict_into(build_model({**RESNET, "padding": "same"}), state)  # Keras' stride-2 padding
    wrong = check_logits(same, state, batch=2)
    assert wrong.finite and not wrong.passed and wrong.difference > 10 * wrong.limit
    huge = dict(state, **{"bn1.weight": state["bn1.weight"] * np.float32(1e30)})  # finite weights,
    result = check_logits(model, huge, batch=2)  # but PyTorch's forward overflows
    assert not result.finite and not result.passed and "FAIL" in result.line()


def test_read_back_comparison_never_reads_nan_as_zero():
    nan = np.array([1.0, np.nan], "float32")
    differing, worst = readback_differences({"a": nan.copy(), "b": np.zeros(2)}, {"a": nan, "b": np.zeros(2)})
    assert differing == ["a"] and np.isnan(worst)
    differing, worst = readback_differences({"b": np.zeros(2)}, {"a": np.ones(1), "b": np.zeros(2)})
    assert differing == ["a"] and worst == np.inf
    assert readback_differences({"a": np.ones(3)}, {"a": np.ones(3)}) == ([], 0.0)


def test_the_forward_check_runs_in_full_float32_and_restores_the_precision_settings():
    from quadkeras.interop.verify import float32_precision

    def settings():
        if keras.backend.backend() == "torch":
            return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.tensor_float_32_execution_enabled()
        return None

    before = settings()
    with float32_precision():
        inside = settings()
    assert settings() == before
    if keras.backend.backend() == "torch":
        assert inside == (False, False)
    elif keras.backend.backend() == "tensorflow":
        assert inside is False
