"""Export faults: out_dir is the previous export or the complete new one, never a mix; failures,
a full disk and killed exports leave it as it was and leave no build folder (TensorFlow only)."""

import errno
import os
import shutil
import signal
import subprocess
import sys

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="export runs under the TensorFlow backend")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _files(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes()) for p in folder.rglob("*") if p.is_file())


def _tiny():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


def test_out_dir_is_replaced_whole_or_left_as_it_was(tmp_path, monkeypatch):
    from quadkeras.export import convert, export_model

    out = tmp_path / "out"
    export_model(_tiny(), str(out), formats=("litert_float",), verbose=False)
    (out / "model_int8.tflite").write_bytes(b"the previous model's int8 file")
    before = _files(out)
    # 1. a non-empty out_dir needs overwrite=True (--overwrite)
    with pytest.raises(ValueError, match=r"Invalid out_dir='.*out': the folder is not empty .*--overwrite"):
        export_model(_tiny(), str(out), formats=("litert_float",), verbose=False)
    # 2. a format that fails: nothing written, the previous parity_report.json survives
    real = convert.to_litert
    monkeypatch.setattr(convert, "to_litert", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    report = export_model(_tiny(), str(out), formats=("litert_float",), verbose=False, overwrite=True)
    assert report["written"] is False and "boom" in report["formats"]["litert_float"]["error"]
    assert "path" not in report["formats"]["litert_float"]
    assert _files(out) == before
    # 3. a full disk (TensorFlow's own error type) mid-build: one OSError naming out_dir
    monkeypatch.setattr(convert, "to_litert", real)

    def disk_full(model, path, **kw):
        os.makedirs(path)
        open(os.path.join(path, "partial.pb"), "wb").close()
        raise RuntimeError(f"{{function_node SaveV2}} {path}/variables.data; No space left on device")

    monkeypatch.setattr(convert, "write_saved_model", disk_full)
    with pytest.raises(OSError) as caught:
        export_model(_tiny(), str(out), formats=("litert_float",), verbose=False, overwrite=True)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(out)
    assert _files(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no build folder left beside it
    # 4. success: the new export alone, nothing of the old one (no mixed models)
    monkeypatch.undo()
    report = export_model(_tiny(), str(out), formats=("litert_float",), verbose=False, overwrite=True)
    assert report["written"] and sorted(os.listdir(out)) == ["model_float.tflite", "parity_report.json",
                                                             "saved_model"]
    assert sorted(os.listdir(tmp_path)) == ["out"]
    # 5. overwrite replaces only an earlier export, never a folder of other files
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match=r"no parity_report.json, so it is not an earlier export"):
        export_model(_tiny(), str(tmp_path / "mine"), formats=("litert_float",), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


# Enters atomic_dir on argv[1] and waits inside (loads safe_io alone: no TensorFlow import).
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("safe_io", sys.argv[2])
safe_io = importlib.util.module_from_spec(spec); spec.loader.exec_module(safe_io)
with safe_io.atomic_dir(sys.argv[1]) as build:
    open(build + "/model_float.tflite", "w").close()
    print("ready", flush=True)
    time.sleep(120)
"""


def test_build_folders_of_killed_exports_are_removed_live_ones_kept(tmp_path):
    from quadkeras.export import export_model

    out = tmp_path / "out"
    safe_io = os.path.join(REPO, "quadkeras", "utils", "safe_io.py")

    def start():
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), safe_io],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    live, killed = start(), start()
    try:
        builds = sorted(n for n in os.listdir(tmp_path) if n.startswith(".tmp-out-"))
        assert len(builds) == 2
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        report = export_model(_tiny(), str(out), formats=("litert_float",), verbose=False)
        left = sorted(n for n in os.listdir(tmp_path) if n.startswith(".tmp-"))
        assert left == [n for n in builds if n.startswith(f".tmp-out-{live.pid}-")]  # the live one
        assert report["written"]
        assert sorted(os.listdir(out)) == ["model_float.tflite", "parity_report.json", "saved_model"]
    finally:
        live.kill()
        live.wait()


def test_a_swap_killed_between_its_renames_gets_the_old_out_dir_back(tmp_path):
    """Killed after renaming out_dir aside, before renaming the new one in: out_dir is missing
    and the old one sits in the dead build folder's old/; the next export restores it first."""
    from quadkeras.utils.safe_io import BUILD_LOCK, clean_stale_builds

    build = tmp_path / ".tmp-out-4194305-0badc0de"  # a pid above Linux's maximum: dead
    (build / "old").mkdir(parents=True)
    (build / "old" / "parity_report.json").write_text("old export")
    (build / "new").mkdir()
    (build / BUILD_LOCK).write_text("4194305")  # nobody holds its lock
    other = tmp_path / ".tmp-outer-4194305-0badc0de"  # another out_dir's: not touched
    other.mkdir()
    assert clean_stale_builds(tmp_path / "out") == [build.name]
    assert (tmp_path / "out" / "parity_report.json").read_text() == "old export"
    assert sorted(os.listdir(tmp_path)) == [other.name, "out"]


def _can_mount_tmpfs():
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
             "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || mount -t tmpfs -o size=64k tmpfs /tmp"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and a user namespace for a small tmpfs")
def test_full_disk_export_app_one_line_and_old_out_dir_intact(tmp_path):
    """apps/export.py into a 96 KiB tmpfs (a real full disk) holding an earlier export."""
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(128),
                              keras.layers.Dense(10)])  # 130 KiB of weights: more than the disk
    model.save(tmp_path / "m.keras")
    disk = tmp_path / "disk"
    disk.mkdir()
    seed = tmp_path / "seed"  # the earlier export, copied onto the small disk inside the namespace
    (seed / "export").mkdir(parents=True)
    (seed / "export" / "parity_report.json").write_text('{"formats": {"litert_float": {}}}')
    (seed / "export" / "model_float.tflite").write_bytes(b"old model" * 100)
    app = [sys.executable, os.path.join(REPO, "apps", "export.py"), f"--model={tmp_path}/m.keras",
           f"--out_dir={disk}/export", "--formats=litert_float", "--overwrite"]
    script = (f"mount -t tmpfs -o size=96k tmpfs {disk} && cp -r {seed}/export {disk}/ && "
              f"{' '.join(app)}; rc=$?; cd {disk} && find . -type f | sort && "
              f"cat export/parity_report.json && exit $rc")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines, proc.stderr[-2000:]
    assert lines[-1] == (f"error: cannot write '{disk}/export': No space left on device (nothing "
                         "was overwritten; free space or choose another folder)."), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    listing = proc.stdout.split("\n")  # what the small disk holds afterwards: the old export only
    assert [line for line in listing if line.startswith("./")] == [
        "./export/model_float.tflite", "./export/parity_report.json"], proc.stdout
    assert '{"formats": {"litert_float": {}}}' in proc.stdout
