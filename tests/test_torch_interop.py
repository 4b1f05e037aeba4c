"""PyTorch checkpoints in QuadraLib's layout: import, export, and the same function.

The PyTorch side here is written independently of `quadkeras.interop` from the QuadraLib paper (the `ours` neuron, QResNet / QVGG): a
functional forward (`torch.nn.functional`) over a state dict with QuadraLib's key names,
`padding=1` on every 3x3 conv (stride 2 included), BN in eval mode.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import keras

torch = pytest.importorskip("torch")
F = torch.nn.functional

from quadkeras.interop import (  # noqa: E402
    export_torch_checkpoint,
    import_torch_checkpoint,
    load_state_dict_into,
    read_state_dict,
    state_dict_of,
)
from quadkeras.models import build_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINT = os.path.join(os.path.dirname(REPO), "shared", "data", "quadralib", "qresnet14_cifar10.pth")
RNG = np.random.default_rng(0)

RESNET = {"family": "resnet", "input_shape": [12, 12, 3], "num_classes": 5, "stem_filters": 4,
          "stages": [{"filters": 4, "blocks": 2, "stride": 1}, {"filters": 8, "blocks": 1, "stride": 2}],
          "conv": {"type": "quad", "neuron": "ours", "use_bias": True}, "use_bias": False}
VGG = {"family": "vgg", "input_shape": [8, 8, 3], "num_classes": 3, "cfg": [4, "M", 6, 6, "M"],
       "conv": {"type": "quad", "neuron": "ours", "use_bias": True}, "use_bias": True,
       "overrides": {"conv2": {"type": "conv"}}}


# ------------------------------------------------------------- independent PyTorch side
def _conv_w(out, inp, k):  # std 0.2: the quadratic ResNet's logits stay finite (0.4 overflowed)
    return RNG.normal(0, 0.2, (out, inp, k, k))


def _bn(prefix, n, state):
    state[f"{prefix}.weight"] = RNG.uniform(0.5, 1.5, n)
    state[f"{prefix}.bias"] = RNG.uniform(-0.5, 0.5, n)
    state[f"{prefix}.running_mean"] = RNG.uniform(-0.5, 0.5, n)
    state[f"{prefix}.running_var"] = RNG.uniform(0.5, 2.0, n)
    state[f"{prefix}.num_batches_tracked"] = np.array(7)


def _quad(prefix, out, inp, k, bias, state):
    for i in (1, 2, 3):
        state[f"{prefix}.conv{i}.weight"] = _conv_w(out, inp, k)
        if bias:
            state[f"{prefix}.conv{i}.bias"] = RNG.uniform(-0.3, 0.3, out)
        _bn(f"{prefix}.bn{i}", out, state)


def resnet_state(quad_bias=True):
    """Random state dict of RESNET, QuadraLib names (conv1/bn1/layerS.B.../linear)."""
    s = {"conv1.weight": _conv_w(4, 3, 3)}
    _bn("bn1", 4, s)
    for name, inp, out in (("layer1.0", 4, 4), ("layer1.1", 4, 4), ("layer2.0", 4, 8)):
        _quad(f"{name}.conv1", out, inp, 3, quad_bias, s)
        _bn(f"{name}.bn1", out, s)
        _quad(f"{name}.conv2", out, out, 3, quad_bias, s)
        _bn(f"{name}.bn2", out, s)
    s["layer2.0.shortcut.0.weight"] = _conv_w(8, 4, 1)
    _bn("layer2.0.shortcut.1", 8, s)
    s["linear.weight"], s["linear.bias"] = RNG.normal(0, 0.3, (5, 8)), RNG.normal(0, 0.3, 5)
    return {k: torch.tensor(v, dtype=torch.int64 if k.endswith("tracked") else torch.float32)
            for k, v in s.items()}


def vgg_state():
    """Random state dict of VGG: features.0 quad, .3 conv, .6 quad (after MaxPool at 2)."""
    s = {}
    _quad("features.0", 4, 3, 3, True, s)
    _bn("features.1", 4, s)
    s["features.4.weight"], s["features.4.bias"] = _conv_w(6, 4, 3), RNG.normal(0, 0.3, 6)
    _bn("features.5", 6, s)
    _quad("features.7", 6, 6, 3, True, s)
    _bn("features.8", 6, s)
    s["classifier.weight"], s["classifier.bias"] = RNG.normal(0, 0.3, (3, 6 * 2 * 2)), RNG.normal(0, 0.3, 3)
    return {k: torch.tensor(v, dtype=torch.int64 if k.endswith("tracked") else torch.float32)
            for k, v in s.items()}


def _t_bn(s, p, x):
    return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                        training=False, eps=1e-5)


def _t_conv(s, p, x, stride=1):
    if f"{p}.conv1.weight" in s:  # quadratic: bn1(conv1 x) * bn2(conv2 x) + bn3(conv3 x)
        b = [_t_bn(s, f"{p}.bn{i}", F.conv2d(x, s[f"{p}.conv{i}.weight"], s.get(f"{p}.conv{i}.bias"),
                                             stride, 1)) for i in (1, 2, 3)]
        return b[0] * b[1] + b[2]
    w = s[f"{p}.weight"]
    return F.conv2d(x, w, s.get(f"{p}.bias"), stride, (w.shape[-1] - 1) // 2)


def torch_resnet_forward(s, x, blocks=(("layer1.0", 1), ("layer1.1", 1), ("layer2.0", 2))):
    """QuadraLib's ResNet forward over `blocks` [(prefix, stride)], global average pool, linear."""
    out = F.relu(_t_bn(s, "bn1", _t_conv(s, "conv1", x)))
    for name, stride in blocks:
        y = F.relu(_t_bn(s, f"{name}.bn1", _t_conv(s, f"{name}.conv1", out, stride)))
        y = _t_bn(s, f"{name}.bn2", _t_conv(s, f"{name}.conv2", y))
        short = out
        if f"{name}.shortcut.0.weight" in s:
            short = _t_bn(s, f"{name}.shortcut.1", F.conv2d(out, s[f"{name}.shortcut.0.weight"], None, stride))
        out = F.relu(y + short)
    return F.linear(out.mean(dim=(2, 3)), s["linear.weight"], s["linear.bias"])


def torch_vgg_forward(s, x):
    x = F.relu(_t_bn(s, "features.1", _t_conv(s, "features.0", x)))
    x = F.max_pool2d(x, 2)
    x = F.relu(_t_bn(s, "features.5", _t_conv(s, "features.4", x)))
    x = F.relu(_t_bn(s, "features.8", _t_conv(s, "features.7", x)))
    x = F.max_pool2d(x, 2)
    return F.linear(torch.flatten(x, 1), s["classifier.weight"], s["classifier.bias"])


def _torch_logits(forward, state, x_nhwc):
    with torch.no_grad():
        return forward(state, torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def _save(state, path, wrap=False, prefix=""):
    state = {prefix + k: v for k, v in state.items()}
    torch.save({"net": state, "acc": 90.0, "epoch": 3} if wrap else state, path)
    return str(path)


# ---------------------------------------------------------------------------------- tests
@pytest.mark.jax
@pytest.mark.parametrize("family", ["resnet", "vgg"])
def test_imported_model_matches_the_pytorch_forward(family, tmp_path):
    config, state, forward = ((RESNET, resnet_state(), torch_resnet_forward) if family == "resnet"
                              else (VGG, vgg_state(), torch_vgg_forward))
    path = _save(state, tmp_path / "ckpt.pth", wrap=family == "resnet", prefix="module.")
    model = import_torch_checkpoint(path, config)
    x = RNG.standard_normal((4, *config["input_shape"])).astype("float32")
    expected = _torch_logits(forward, state, x)
    assert np.isfinite(expected).all()  # NaN == NaN in assert_allclose: it would pass vacuously
    got = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    saved = str(tmp_path / "m.keras")  # the written .keras reproduces it
    model.save(saved)
    again = np.asarray(keras.ops.convert_to_numpy(keras.models.load_model(saved)(x, training=False)))
    np.testing.assert_allclose(again, got, rtol=1e-6, atol=1e-6)


@pytest.mark.jax
def test_exported_state_dict_drives_the_pytorch_forward_and_round_trips_exactly(tmp_path):
    model = build_model(RESNET)
    model(RNG.standard_normal((16, 12, 12, 3)).astype("float32"), training=True)  # move BN stats
    path = export_torch_checkpoint(model, str(tmp_path / "out.pth"), wrap=True)
    state = {k: torch.as_tensor(v) for k, v in read_state_dict(path).items()}
    assert set(state) == set(resnet_state())  # exactly QuadraLib's key set
    x = RNG.standard_normal((3, 12, 12, 3)).astype("float32")
    expected = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    np.testing.assert_allclose(_torch_logits(torch_resnet_forward, state, x), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    back = import_torch_checkpoint(path, RESNET)
    for a, b in zip(model.weights, back.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_quadratic_bias_and_class_count_are_read_from_the_checkpoint(tmp_path):
    state = resnet_state(quad_bias=False)
    state["linear.weight"], state["linear.bias"] = torch.zeros(7, 8), torch.zeros(7)
    model = import_torch_checkpoint(_save(state, tmp_path / "c.pth"), RESNET)
    assert model.output_shape == (None, 7)
    assert not model.get_layer("stage1_block1_conv1").use_bias


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.pop("layer1.0.conv1.conv2.weight"), r"missing keys layer1\.0\.conv1\.conv2\.weight \(4, 4, 3, 3\)"),
    (lambda s: s.update(extra=torch.zeros(1)), "unexpected keys extra"),
    (lambda s: s.update({"linear.bias": torch.zeros(5, 1)}), r"linear\.bias has shape \(5, 1\), expected \(5,\)"),
])
def test_bad_checkpoints_give_one_line_errors(edit, match, tmp_path):
    state = resnet_state()
    edit(state)
    with pytest.raises(ValueError, match=match) as err:
        import_torch_checkpoint(_save(state, tmp_path / "bad.pth"), RESNET)
    assert "\n" not in str(err.value)


def test_unreadable_checkpoints_give_one_line_errors(tmp_path):
    good = _save(resnet_state(), tmp_path / "good.pth")
    (tmp_path / "trunc.pth").write_bytes(open(good, "rb").read()[:2000])
    (tmp_path / "text.pth").write_text("not a checkpoint")
    for name in ("trunc.pth", "text.pth", "missing.pth"):
        with pytest.raises(ValueError, match=f"Invalid checkpoint .*{name}") as err:
            read_state_dict(str(tmp_path / name))
        assert "\n" not in str(err.value)


def test_round_trip_keras_torch_keras_is_exact_for_the_zoo():
    for name in ("qresnet14", "resnet20"):
        model = build_model(name)
        clone = load_state_dict_into(build_model(name), state_dict_of(model))
        for a, b in zip(model.weights, clone.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.skipif(not os.path.isfile(CHECKPOINT), reason="../shared/data/quadralib checkpoint not present")
def test_quadralib_checkpoint_matches_pytorch_on_real_images():
    from quadkeras.data import load_data

    data = load_data("cifar10")
    idx = np.random.default_rng(0).choice(len(data.x_test), 500, replace=False)
    x = ((data.x_test[idx] / 255.0 - np.array(data.mean)) / np.array(data.std)).astype("float32")
    model = import_torch_checkpoint(CHECKPOINT, "qresnet14")
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 520_282  # bias=True
    state = read_state_dict(CHECKPOINT)
    expected = _torch_logits(lambda s, t: _qresnet14_forward(s, t),
                             {k: torch.as_tensor(v) for k, v in state.items()}, x)
    got = model.predict(x, batch_size=100, verbose=0)
    assert (got.argmax(1) == expected.argmax(1)).mean() == 1.0
    assert np.abs(got - expected).max() < 1e-3
    assert (got.argmax(1) == data.y_test[idx]).mean() > 0.75  # 81.85 % on all 10,000


QRESNET14_BLOCKS = tuple((f"layer{layer}.{b}", stride if b == 0 else 1)
                         for layer, stride in ((1, 1), (2, 2), (3, 2)) for b in range(2))


def _qresnet14_forward(s, x):
    return torch_resnet_forward(s, x, QRESNET14_BLOCKS)


def _convert(*args):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(REPO, "apps", "convert.py"), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_convert_app_both_directions_and_bad_input(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("app subprocesses run once, under tensorflow")
    pth = _save(resnet_state(), tmp_path / "in.pth", wrap=True)
    config = tmp_path / "net.yaml"
    import yaml

    config.write_text(yaml.safe_dump(RESNET))
    out = tmp_path / "m.keras"
    ok = _convert(f"--from_torch={pth}", f"--model={config}", f"--out={out}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "verify: max |logit(keras) - logit(torch)|" in ok.stdout and out.exists()
    back = tmp_path / "back.pth"
    ok = _convert(f"--model={out}", f"--to_torch={back}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert set(read_state_dict(str(back))) == set(resnet_state())
    bad = _convert(f"--from_torch={pth}", "--model=resnet20", f"--out={out}")  # wrong net, file exists
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: Invalid --out")
    bad = _convert(f"--from_torch={pth}", "--model=resnet20", f"--out={tmp_path / 'x.keras'}")
    assert bad.returncode != 0 and not (tmp_path / "x.keras").exists()
    assert bad.stderr.strip().splitlines()[-1].startswith("error: Invalid checkpoint")


def test_library_torch_nets_compute_the_independent_forward():
    from quadkeras.interop.torch_nets import build_torch_model

    x = RNG.standard_normal((2, 8, 8, 3)).astype("float32")
    for config, state, forward in ((RESNET, resnet_state(), torch_resnet_forward), (VGG, vgg_state(), torch_vgg_forward)):
        net = build_torch_model({**config, "input_shape": [8, 8, 3]}).eval()
        net.load_state_dict(state, strict=True)
        with torch.no_grad():
            got = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        np.testing.assert_allclose(got, _torch_logits(forward, state, x), rtol=1e-5, atol=1e-5)
