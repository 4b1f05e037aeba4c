"""`bench/step_overhead.py` (issue #26): its table from fake timings, and its plain-PyTorch LSQ
ResNet-20 (`bench/plain_torch.py`) against SPEC section 4 and the zoo's LSQ W4A4 plan.

The bench itself (one process per backend, minutes of compilation) is not run here; one
plain-PyTorch cell runs one step. TensorFlow process only: nothing here depends on the
backend of this process.
"""

import importlib.util
import math
import os
import re
import sys

import keras
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="bench code: backend-independent, run once")


def _bench():
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)  # the bench imports its neighbours (train_step, plain_torch)
    spec = importlib.util.spec_from_file_location("step_overhead", os.path.join(BENCH, "step_overhead.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(seconds, first=1.0, error=None):
    return {"steps": list(seconds), "first": first, "error": error}


def test_table_ratios_from_fake_timings():
    """img/s = batch / median step, ratio to plain PyTorch eager of the same model and regime,
    first-step seconds on compiled rows only, the LSQ / float step ratio, failed cells named."""
    bench = _bench()
    args = bench.parse_args(["--backends=torch", "--rounds=3"])
    rows = bench.table_rows(args.backends, args.modes)
    assert rows == [("pytorch", "eager"), ("pytorch", "compiled"), ("torch", "eager"), ("torch", "compiled")]
    results = {}
    for regime, base in zip(args.regimes, (20.0, 40.0)):  # plain eager img/s: 20 and 40
        batch = bench.REGIMES[regime]["batch"]
        for model in args.models:
            for (side, mode), factor in zip(rows, (1.0, 2.0, 4.0, 0.5)):  # img/s x factor
                step = batch / base / factor * (1.25 if model == "resnet20_lsq" else 1.0)
                results[regime, model, side, mode] = _cell([step * 3, step, step * 0.5], first=42.0)
    results["compute", "qresnet14", "torch", "compiled"] = _cell([], first=None,
                                                                 error="RuntimeError: boom")
    lines = bench.report(results, args)
    text = "\n".join(lines)
    table = lines[:lines.index("")]  # then the LSQ / float ratios, then the failed cells
    row = next(line for line in table if line.startswith("resnet20 "))
    assert "plain PyTorch eager" in row
    assert re.search(r"\|\s+20\.0\s+1\.00x\s+-\s+\|\s+40\.0\s+1\.00x\s+-$", row), row
    compiled = [line for line in table if "quadkeras torch jit_compile=True" in line]
    assert len(compiled) == 3
    assert re.search(r"\|\s+10\.0\s+0\.50x\s+42\.0\s+\|", compiled[1]), compiled[1]  # resnet20
    eager = [line for line in table if "quadkeras torch jit_compile=False" in line][1]
    assert re.search(r"\|\s+80\.0\s+4\.00x\s+-\s+\|", eager), eager
    assert "failed (see below)" in compiled[0]
    assert "qresnet14 / quadkeras torch jit_compile=True / compute: RuntimeError: boom" in text
    ratios = lines[lines.index(next(line for line in lines if line.startswith("ResNet-20 LSQ"))) + 2:]
    assert len(ratios) >= 4 and all(re.search(r"\|\s+1\.25x\s+\|\s+1\.25x", line) for line in ratios[:4])


def test_compute_steps_apply_to_the_compute_regime_only():
    bench = _bench()
    args = bench.parse_args(["--steps=20", "--compute_steps=3"])
    assert (bench.regime_steps(args, "overhead"), bench.regime_steps(args, "compute")) == (20, 3)
    args = bench.parse_args(["--steps=7"])
    assert (bench.regime_steps(args, "overhead"), bench.regime_steps(args, "compute")) == (7, 7)


def test_bad_flags_are_one_line_errors(capsys):
    bench = _bench()
    for argv, flag in ((["--models=resnet99"], "--models='resnet99'"), (["--modes=jit"], "--modes='jit'"),
                       (["--backends=numpy"], "--backends='numpy'"), (["--steps=0"], "--steps=0"),
                       (["--compute_steps=0"], "--compute_steps=0")):
        with pytest.raises(SystemExit) as err:
            bench.parse_args(argv)
        assert err.value.code == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: Invalid {flag}"), lines


def _plain_torch():
    _bench()  # puts bench/ on sys.path
    import plain_torch

    return plain_torch


def test_plain_lsq_matches_the_spec():
    """Forward s*round(clip(v/s, -Q_N, Q_P)); d/dv 1 inside the range, 0 outside; d/ds
    (round(v/s) - v/s inside, -Q_N / Q_P at the clip) scaled by 1/sqrt(N*Q_P)."""
    import torch

    plain_torch = _plain_torch()
    v = torch.tensor([[-3.0, -0.26, 0.0, 0.3], [0.55, 0.74, 1.0, 9.0]])
    for signed, per_sample in ((True, False), (False, True)):
        q = plain_torch.LSQ(4, signed=signed, per_sample=per_sample)
        qn, qp = (8, 7) if signed else (0, 15)
        assert (q.qn, q.qp) == (qn, qp)
        with torch.no_grad():
            q.step.fill_(0.25)
        x = v.clone().requires_grad_(True)
        q(x).sum().backward()
        r = np.clip(v.numpy() / 0.25, -qn, qp)
        np.testing.assert_allclose(q(v).detach().numpy(), 0.25 * np.round(r), rtol=1e-6)
        inside = (v.numpy() / 0.25 >= -qn) & (v.numpy() / 0.25 <= qp)
        np.testing.assert_array_equal(x.grad.numpy(), inside.astype("float32"))
        n = 4 if per_sample else 8
        ds = np.where(inside, np.round(r) - v.numpy() / 0.25, r).sum() / math.sqrt(n * qp)
        np.testing.assert_allclose(float(q.step.grad), ds, rtol=1e-5)
    q.init_step(v)  # 2 * mean|v| / sqrt(Q_P)
    np.testing.assert_allclose(float(q.step.detach()), 2 * float(v.abs().mean()) / math.sqrt(15), rtol=1e-6)


def test_plain_lsq_resnet20_quantizes_what_the_zoo_quantizes():
    """The zoo's `scheme_from_flags("lsq", 4, 4)` ResNet-20 and the plain-PyTorch one: the same
    layers (block convs; stem, classifier and shortcuts float), per-tensor steps, signed 4-bit
    kernels, unsigned 4-bit inputs, the same trainable parameter count."""
    from quadkeras.models import build_model
    from quadkeras.quantize import quantized_layers, scheme_from_flags

    bench, plain_torch = _bench(), _plain_torch()
    zoo_name, flags = bench.MODELS["resnet20_lsq"]
    model = build_model(zoo_name, num_classes=10, input_shape=(8, 8, 3), quantize=scheme_from_flags(*flags))
    layers = quantized_layers(model)
    expected = [re.sub(r"stage(\d)_block(\d)_(conv\d)",
                       lambda m: f"layer{m[1]}.{int(m[2]) - 1}.{m[3]}", layer.name) for layer in layers]
    net = plain_torch.build_plain_net("resnet20_lsq")
    assert plain_torch.lsq_layer_names(net) == expected and len(expected) == 18
    for layer in layers:
        k, i = layer.kernel_quantizer, layer.input_quantizer
        assert layer.output_quantizer is None
        assert (k.method, k.bits, k.signed, k.granularity) == ("lsq", 4, True, "per_tensor")
        assert (i.method, i.bits, i.signed, i.granularity) == ("lsq", 4, False, "per_tensor")
    conv = net.get_submodule(expected[0])
    assert (conv.weight_quantizer.bits, conv.weight_quantizer.signed) == (4, True)
    assert (conv.input_quantizer.bits, conv.input_quantizer.signed) == (4, False)
    assert sum(p.numel() for p in net.parameters()) == sum(
        int(np.prod(w.shape)) for w in model.trainable_weights) == 272_474 + 36
    step = bench.make_cell("pytorch", "resnet20_lsq", "eager", bench.REGIMES["overhead"])
    losses = [step(), step()]  # one cell, smoke: it trains (same batch, the loss moves)
    assert np.all(np.isfinite(losses)) and losses[0] != losses[1], losses


def test_step_profile_prints_the_top_ops_of_an_eager_step():
    """`bench/step_profile.py` (where a torch step's time goes) runs: one profiled eager
    ResNet-20 step prints its time and the profiler's table; a bad count or an unknown model is
    a one-line error."""
    import subprocess

    script = os.path.join(BENCH, "step_profile.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, script, "--jit_compile=false", "--steps=1", "--rows=3"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"\d+\.\d+ ms a step", done.stdout), done.stdout
    assert "aten::" in done.stdout and "1 profiled steps" in done.stdout, done.stdout
    bad = subprocess.run([sys.executable, script, "--steps=0"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and "Invalid --steps=0" in bad.stderr, bad.stderr
    unknown = subprocess.run([sys.executable, script, "--model=resnet21"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines()[-1].endswith(
        "Invalid --model='resnet21': expected one of qresnet14, qvgg13, qvgg7, resnet20, resnet32, vgg13."), unknown.stderr
