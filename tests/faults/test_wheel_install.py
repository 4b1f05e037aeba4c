"""The package as a user installs it: the wheel built from the sources, installed with no
downloads into a fresh virtual environment outside the checkout, its console scripts run from
a folder outside the checkout: `--version`, `quadkeras-train --flagfile=configs/quickstart.cfg`
(the shipped flagfile, copied from <prefix>/share/quadkeras/configs; digits, one epoch on a
seeded subset) and `quadkeras-export` of that run. Once, in the TensorFlow process (slow: three
TensorFlow start-ups)."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import keras
import pytest

import quadkeras

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="builds and installs the wheel once; backend-independent")
SOURCES = ("pyproject.toml", "README.md", "quadkeras", "configs")  # what the wheel is built from


def _run(cmd, cwd, env=None, timeout=300):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-3000:])
    return out.stdout


def _wheel(tmp_path):
    """Build the wheel from a copy of the sources (the build writes nothing into the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", tmp_path / "dist", src], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("quadkeras-*.whl")
    return wheel


def _venv(tmp_path, wheel):
    """A fresh venv whose dependencies are this interpreter's (a .pth line), the wheel in it."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=tmp_path).strip()
    # a plain path line: the dependencies, not the checkout's editable finder (.pth files in a
    # directory named by a .pth line are not processed)
    with open(os.path.join(site, "zz_checkout_deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp_path)
    return venv


@TF_ONLY
def test_wheel_installs_outside_the_checkout_and_its_apps_train_and_export(tmp_path):
    wheel = _wheel(tmp_path)
    assert wheel.name == f"quadkeras-{quadkeras.__version__}-py3-none-any.whl"  # one version
    venv = _venv(tmp_path, wheel)
    work = tmp_path / "work"  # the user's folder: not the checkout, no quadkeras/ in it
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    where = json.loads(_run([venv / "bin" / "python", "-c", (
        "import importlib.util, importlib.metadata, json, os, sysconfig; "
        "print(json.dumps([importlib.util.find_spec('quadkeras').origin, "
        "importlib.metadata.version('quadkeras'), "
        "os.path.join(sysconfig.get_path('data'), 'share', 'quadkeras', 'configs')]))")],
        cwd=work, env=env))
    origin, version, configs = where
    assert origin.startswith(str(venv)) and not origin.startswith(REPO), origin  # the wheel's copy
    assert version == quadkeras.__version__

    assert _run(["quadkeras-train", "--version"], cwd=work, env=env).strip() == (
        f"quadkeras-train (quadkeras {quadkeras.__version__})")
    shutil.copytree(configs, work / "configs")  # what docs tell an installed user to do
    out = _run(["quadkeras-train", "--flagfile=configs/quickstart.cfg", "--epochs=1",
                "--max_train=128", "--max_test=64", "--batch_size=32", "--work_dir=run",
                "--noplots", "--verbose=0"], cwd=work, env=env)
    assert "quadkeras-train: backend=tensorflow" in out
    with open(work / "run" / "summary.json") as f:
        assert json.load(f)["epochs_run"] == 1
    _run(["quadkeras-export", "--model=run", "--out_dir=exported", "--dataset=digits",
          "--formats=litert_float", "--eval_limit=32", "--calibration_samples=16",
          "--latency_runs=2"], cwd=work, env=env)
    with open(work / "exported" / "parity_report.json") as f:
        report = json.load(f)["formats"]["litert_float"]
    assert report["top1_agreement"] >= 0.9 and report["size_bytes"] > 0, report
