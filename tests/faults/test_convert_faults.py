"""apps/convert.py on bad input: a damaged `.pth`, a `--verify` mismatch and a full disk end in
ONE `error:` line, exit 1, nothing written (a diverged model: the library test); `--torch_format=quadralib`
writes QuadraLib's resume fields as numbers. Real subprocesses, started in parallel, once, in
the TensorFlow process (the contract is backend-independent). The library-level checks are
in tests/test_torch_checkpoint_checks.py."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

torch = pytest.importorskip("torch")

from tests.faults.test_app_faults import REPO, TF_ONLY  # noqa: E402
from tests.test_torch_checkpoint_checks import _damage  # noqa: E402
from tests.test_torch_interop import RESNET, resnet_state  # noqa: E402

ENV = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
CONVERT = [sys.executable, os.path.join(REPO, "apps", "convert.py")]


def _full_disk_command(folder, args):
    """`convert.py args` inside a private mount namespace with a 16 KiB tmpfs (the checkpoint needs ~70 KiB) on `folder`
    (`unshare -rm`: no root needed where user namespaces are allowed), then what is left there;
    None where that is not possible."""
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {folder}"],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        return None
    script = (f"mount -t tmpfs -o size=16k tmpfs {folder} && {' '.join(CONVERT)} {' '.join(args)}; "
              f"rc=$?; echo left: $(ls -A {folder}); exit $rc")
    return ["unshare", "-rm", "sh", "-c", script]


def _fixtures(t):
    """Checkpoints and models for the cases: one damaged bit, a work_dir with best.keras."""
    import yaml

    from quadkeras.interop import state_dict_of
    from quadkeras.models import build_model
    from quadkeras.models.model_config import save_model
    from quadkeras.training import checkpoint

    (t / "net.yaml").write_text(yaml.safe_dump(RESNET))
    (t / "same.yaml").write_text(yaml.safe_dump({**RESNET, "padding": "same"}))  # Keras' stride-2 padding
    model = build_model(RESNET)
    torch.save({k: torch.as_tensor(v) for k, v in state_dict_of(model).items()}, t / "ok.pth")
    torch.save(resnet_state(), t / "bad.pth")
    with zipfile.ZipFile(t / "bad.pth") as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    _damage(str(t / "bad.pth"), info.filename, 1)  # one bit of one weight
    run = t / "run"
    os.makedirs(run)
    save_model(model, str(run / "best.keras"))
    checkpoint.record_best(str(run), 0.8123, 5)
    checkpoint.write_json(str(run / "state.json"), {"epoch": 7, "monitor": "val_acc",  # as training writes it
                                                    "config": {"model": str(t / "net.yaml")}})
    os.makedirs(t / "out")
    os.makedirs(t / "full")


@TF_ONLY
def test_convert_refuses_damage_a_mismatch_and_a_full_disk_in_one_line(tmp_path):
    t = tmp_path
    _fixtures(t)
    cases = {
        "crc": [f"--from_torch={t}/bad.pth", f"--model={t}/net.yaml", f"--out={t}/out/crc.keras"],
        "mismatch": [f"--from_torch={t}/ok.pth", f"--model={t}/same.yaml", f"--out={t}/out/same.keras"],
        "quadralib": [f"--model={t}/run", f"--to_torch={t}/run.pth", "--torch_format=quadralib"],
    }
    procs = {name: subprocess.Popen(CONVERT + args, env=ENV, cwd=REPO, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, args in cases.items()}
    full = _full_disk_command(t / "full", [f"--model={t}/run/best.keras", f"--to_torch={t}/full/x.pth"])
    if full is not None:
        procs["full_disk"] = subprocess.Popen(full, env=ENV, cwd=REPO, text=True,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err)
    expected = {
        "crc": r"error: Invalid checkpoint '.*bad\.pth': corrupt file, member '.*/data/\d+' fails its CRC-32 check",
        "mismatch": r"error: verify failed for --from_torch='.*ok\.pth': max \|logit\(keras\) - logit\(torch\)\| = "
                    r"\S+ exceeds --verify_rtol=",
        "full_disk": rf"error: cannot write '{t}/full/x\.pth': No space left on device",
    }
    import re

    for name, pattern in expected.items():
        if name not in results:
            continue  # no user namespaces here: the full-disk case is covered by the unit test
        rc, out, err = results[name]
        last = err.strip().splitlines()[-1] if err.strip() else ""
        assert rc == 1 and re.match(pattern, last), (name, out[-1000:], err[-2000:])
        assert "Traceback" not in err, (name, err[-2000:])
    assert os.listdir(t / "out") == []  # nothing written, no temp file left
    assert "FAIL" in results["mismatch"][1] and "PASS" not in results["mismatch"][1]
    if "full_disk" in results:
        assert results["full_disk"][1].strip().endswith("left:")  # the tmpfs holds nothing
    rc, out, err = results["quadralib"]
    assert rc == 0, err[-2000:]
    assert "0 differ" in out and out.count(": PASS") == 2  # read back exact, forwards agree
    saved = torch.load(t / "run.pth", weights_only=True)
    assert (saved["acc"], saved["epoch"]) == (81.23, 4)  # best.json's 0.8123, our epoch 5 = index 4
    assert type(saved["acc"]) is float and type(saved["epoch"]) is int
