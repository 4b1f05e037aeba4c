"""PyTorch layouts beyond QuadraLib's: bearpaw's CIFAR ResNet (BSQ's float checkpoints) and
BSQ's bit form, both directions, against a PyTorch side written here from SPEC §5 / §5b.

The PyTorch side is independent of `quadkeras.interop`: a functional forward over a state dict
with bearpaw's names (`conv1`, `bn1`, `layer{s}.{b}.conv{1,2}` / `.bn{1,2}`,
`layer{s}.0.downsample.{0,1}`, `fc`), BN in eval mode, `padding=1` on 3x3 convs; BSQ's bit
layers' weights from SPEC's formula W = scale * bit_STE(sum_k (p_k - n_k) 2^(N-1-k) / (2^N - 1))
(planes MSB first, bit_STE = clip to [-1, 1] and round to the N-bit grid); BSQ's activations
(stem ReLU float; each block activation ReLU6 then S = max|x| of the batch tensor, x rounded to
S * k / (2^a - 1)); and a plain `nn.Module` ResNet with bearpaw's attribute names.
"""

import numpy as np
import pytest
import keras

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

from quadkeras.bsq import bsq_layers, scheme_of, to_bsq  # noqa: E402
from quadkeras.interop import export_torch_checkpoint, import_torch_checkpoint, read_state_dict  # noqa: E402
from quadkeras.interop.bsq_checkpoint import (  # noqa: E402
    bsq_scheme, export_bsq_checkpoint, float_state, import_bsq_checkpoint)
from quadkeras.interop.layouts import detect_layout  # noqa: E402
from quadkeras.models import build_model  # noqa: E402

TINY = {"family": "resnet", "input_shape": [8, 8, 3], "num_classes": 5, "stem_filters": 4,
        "stages": [{"filters": 4, "blocks": 1, "stride": 1}, {"filters": 8, "blocks": 1, "stride": 2}],
        "conv": {"type": "conv"}, "use_bias": False}
BLOCKS = (("layer1.0", 4, 4, 1), ("layer2.0", 4, 8, 2))  # (name, in, out, stride)
BIT_LAYERS = ("conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "fc")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _bn(state, prefix, n, rng):
    state[f"{prefix}.weight"] = rng.uniform(0.5, 1.5, n)
    state[f"{prefix}.bias"] = rng.uniform(-0.3, 0.3, n)
    state[f"{prefix}.running_mean"] = rng.uniform(-0.3, 0.3, n)
    state[f"{prefix}.running_var"] = rng.uniform(0.5, 2.0, n)
    state[f"{prefix}.num_batches_tracked"] = np.array(11)


def _tensors(state):
    return {k: torch.tensor(np.asarray(v), dtype=torch.int64 if k.endswith("tracked") else torch.float32)
            for k, v in state.items()}


def bearpaw_float_state(seed=0):
    """A random float state dict of TINY in bearpaw's names."""
    rng, s = _rng(seed), {}
    s["conv1.weight"] = rng.normal(0, 0.4, (4, 3, 3, 3))
    _bn(s, "bn1", 4, rng)
    for name, cin, cout, stride in BLOCKS:
        s[f"{name}.conv1.weight"] = rng.normal(0, 0.3, (cout, cin, 3, 3))
        _bn(s, f"{name}.bn1", cout, rng)
        s[f"{name}.conv2.weight"] = rng.normal(0, 0.3, (cout, cout, 3, 3))
        _bn(s, f"{name}.bn2", cout, rng)
        if stride != 1 or cin != cout:
            s[f"{name}.downsample.0.weight"] = rng.normal(0, 0.4, (cout, cin, 1, 1))
            _bn(s, f"{name}.downsample.1", cout, rng)
    s["fc.weight"], s["fc.bias"] = rng.normal(0, 0.4, (5, 8)), rng.normal(0, 0.3, 5)
    return _tensors(s)


def _planes(codes, bits):
    """SPEC: positive / negative planes of integer codes, MSB first on the last axis."""
    mags = np.abs(codes)[..., None] >> np.arange(bits - 1, -1, -1)
    bit = (mags & 1).astype("float64")
    return bit * (codes >= 0)[..., None], bit * (codes < 0)[..., None]


def bsq_bit_state(seed=0):
    """BSQ's bit form of TINY written from SPEC §5b: every conv but the downsample and the fc in
    planes (bits 2..8 per layer; layer1.0.conv2 continuous in [0, 2], as mid-search), fc with a
    bit bias; the Nbit_dict BSQ saves."""
    rng = _rng(seed)
    s = {k: v.numpy() for k, v in bearpaw_float_state(seed).items()}
    nbits = {}
    for i, name in enumerate(BIT_LAYERS):
        key = "fc.weight" if name == "fc" else f"{name}.weight"
        bits = 2 + (3 * i + 1) % 7
        codes = rng.integers(-(2 ** bits - 1), 2 ** bits, s.pop(key).shape)
        p, n = _planes(codes, bits)
        if name == "layer1.0.conv2":
            p, n = rng.uniform(0, 2, p.shape), rng.uniform(0, 2, n.shape)
        s[f"{name}.pweight"], s[f"{name}.nweight"] = p, n
        s[f"{name}.scale"] = np.array([rng.uniform(0.2, 0.8)])
        nbits[name] = [bits, 0]
    codes = rng.integers(-15, 16, 5)
    s["fc.pbias"], s["fc.nbias"] = _planes(codes, 4)
    s["fc.biasscale"] = np.array([0.3])
    s.pop("fc.bias")
    nbits["fc"][1] = 4
    return _tensors(s), nbits


def spec_weight(s, prefix, p="pweight", n="nweight", scale="scale"):
    """SPEC §5b: W = scale * bit_STE(sum_k (p_k - n_k) 2^(N-1-k) / (2^N - 1))."""
    planes = (s[f"{prefix}.{p}"] - s[f"{prefix}.{n}"]).double()
    bits = planes.shape[-1]
    top = 2.0 ** bits - 1
    w = (planes * 2.0 ** torch.arange(bits - 1, -1, -1, dtype=torch.float64)).sum(-1) / top
    w = w.clamp(-1, 1)
    return (s[f"{prefix}.{scale}"].double() * torch.sign(w) * torch.round(w.abs() * top) / top).float()


def _w(s, prefix):
    return s[f"{prefix}.weight"] if f"{prefix}.weight" in s else spec_weight(s, prefix)


def _bn_eval(s, p, x):
    return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                        training=False, eps=1e-5)


def _act(x, abits):
    """BSQ's block activation: ReLU6, then the per-batch max-abs grid (abits=0: ReLU)."""
    if not abits:
        return F.relu(x)
    x = F.relu6(x)
    top, step = x.abs().max(), 2 ** abits - 1
    return x * 0 if top == 0 else top * torch.round(x.abs() * step / top) / step * torch.sign(x)


def spec_forward(s, x_nhwc, abits=0):
    """Bearpaw's CIFAR ResNet (BSQ's with bit layers) over state dict `s`, NHWC input."""
    s = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in s.items()}
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    out = F.relu(_bn_eval(s, "bn1", F.conv2d(x, _w(s, "conv1"), padding=1)))
    for name, _, _, stride in BLOCKS:
        y = _act(_bn_eval(s, f"{name}.bn1", F.conv2d(out, _w(s, f"{name}.conv1"), stride=stride, padding=1)), abits)
        y = _bn_eval(s, f"{name}.bn2", F.conv2d(y, _w(s, f"{name}.conv2"), padding=1))
        if f"{name}.downsample.0.weight" in s:
            out = _bn_eval(s, f"{name}.downsample.1", F.conv2d(out, s[f"{name}.downsample.0.weight"], stride=stride))
        out = _act(y + out, abits)
    bias = s["fc.bias"] if "fc.bias" in s else spec_weight(s, "fc", "pbias", "nbias", "biasscale")
    with torch.no_grad():
        return F.linear(out.mean(dim=(2, 3)), _w(s, "fc"), bias).numpy()


class Block(nn.Module):  # bearpaw's BasicBlock names
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)


class PlainResNet(nn.Module):  # bearpaw's CIFAR ResNet names, TINY's shape
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4)
        self.layer1, self.layer2 = nn.Sequential(Block(4, 4, 1)), nn.Sequential(Block(4, 8, 2))
        self.fc = nn.Linear(8, 5)


def _keras(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def _x(seed=1, n=6):
    return _rng(seed).standard_normal((n, 8, 8, 3)).astype("float32")


def _close(got, want):
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ------------------------------------------------------------------------------ bearpaw
def test_bearpaw_checkpoint_is_detected_and_imported(tmp_path):
    state = bearpaw_float_state()
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 343, "acc": 92.55,
               "best_acc": 92.55, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}
    torch.save(wrapped, tmp_path / "bp.pth.tar")
    assert detect_layout(wrapped["state_dict"]) == "bearpaw"
    model = import_torch_checkpoint(str(tmp_path / "bp.pth.tar"), TINY)
    x = _x()
    _close(_keras(model, x), spec_forward(state, x))


def test_keys_fitting_no_layout_name_the_closest_one(tmp_path):
    state = bearpaw_float_state()
    state.pop("layer2.0.downsample.0.weight")
    state["fc.extra"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"closest: bearpaw, .*missing keys layer2\.0\.downsample\.0\.weight "
                                         r"\(8, 4, 1, 1\); unexpected keys fc\.extra") as err:
        import_torch_checkpoint(str(tmp_path / "bad.pth"), TINY)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("layout", ["quadralib", "bearpaw"])
def test_round_trip_in_both_layouts_and_a_plain_torch_resnet_loads_it(layout, tmp_path):
    model = import_torch_checkpoint(_save(bearpaw_float_state(2), tmp_path / "in.pth"), TINY)
    path = export_torch_checkpoint(model, str(tmp_path / "out.pth"), wrap=True, layout=layout, acc=90.0, epoch=3)
    saved = torch.load(path, weights_only=True)
    sd = saved["net"] if layout == "quadralib" else saved["state_dict"]
    assert (layout == "bearpaw") == all(k.startswith("module.") for k in sd)
    if layout == "bearpaw":
        assert saved["best_acc"] == saved["acc"] == 90.0 and saved["epoch"] == 3
        net, plain = PlainResNet(), dict(sd)
        torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(plain, "module.")
        net.load_state_dict(plain, strict=True)
        assert "layer2.0.downsample.0.weight" in net.state_dict() and "fc.bias" in net.state_dict()
        x = _x()
        _close(_keras(model, x), spec_forward(net.state_dict(), x))
    else:
        assert "layer2.0.shortcut.0.weight" in sd and "linear.weight" in sd
    back = import_torch_checkpoint(path, TINY)
    for a, b in zip(model.weights, back.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def _save(state, path):
    torch.save(state, path)
    return str(path)


# ---------------------------------------------------------------------------- BSQ bit form
def test_bsq_bit_form_imports_as_the_spec_forward(tmp_path):
    state, nbits = bsq_bit_state()
    path = _save({"state_dict": {"module." + k: v for k, v in state.items()}, "Nbit_dict": nbits,
                  "epoch": 1, "acc": 10.0, "best_acc": 10.0}, tmp_path / "bits.pth.tar")
    model = import_bsq_checkpoint(path, TINY, abits=4)
    expected = {"stem_conv": 3, "stage1_block1_conv1": 6, "stage1_block1_conv2": 2, "stage2_block1_conv1": 5,
                "stage2_block1_conv2": 8, "logits": 4}
    assert scheme_of(model) == expected == bsq_scheme(path)
    assert model.get_layer("logits").bias_quantizer.current_precision() == 4
    assert not any(layer.name == "stage2_block1_shortcut" for layer in bsq_layers(model))  # float
    x = _x()
    _close(_keras(model, x), spec_forward(state, x, abits=4))
    nbits["fc"] = [4, 3]  # a Nbit_dict that contradicts the planes
    bad = _save({"state_dict": state, "Nbit_dict": nbits}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"Nbit_dict gives 'fc' \[4, 3\] bits, its planes hold \[4, 4\]"):
        import_bsq_checkpoint(bad, TINY, abits=4)


def _bsq_model(tmp_path):
    """A BSQ model of TINY (4-bit activations, bit bias on the fc) with mixed precisions."""
    fp = import_torch_checkpoint(_save(bearpaw_float_state(3), tmp_path / "fp.pth"), TINY)
    model = to_bsq(fp, bits=8, abits=4, quantize_bias=True)
    for bits, wrapper in zip((8, 3, 5, 2, 6, 4), bsq_layers(model)):
        wrapper.kernel_quantizer.set_value(wrapper.kernel_quantizer.dequantized(), bits)
    bias = model.get_layer("logits").bias_quantizer
    bias.set_value(bias.dequantized(), 3)
    return model


def test_bsq_export_bit_and_float_forms_match_the_spec_forward(tmp_path):
    model = _bsq_model(tmp_path)
    x = _x()
    want = _keras(model, x)
    path = export_bsq_checkpoint(model, str(tmp_path / "bits.pth"), acc=50.0, epoch=2)
    saved = torch.load(path, weights_only=True)
    assert saved["Nbit_dict"] == {"conv1": [8, 0], "layer1.0.conv1": [3, 0], "layer1.0.conv2": [5, 0],
                                  "layer2.0.conv1": [2, 0], "layer2.0.conv2": [6, 0], "fc": [4, 3]}
    sd = {k[len("module."):]: v for k, v in saved["state_dict"].items()}
    assert all(k.startswith("module.") for k in saved["state_dict"])
    assert sd["layer1.0.conv1.pweight"].shape == (4, 4, 3, 3, 3) and sd["fc.pbias"].shape == (5, 3)
    assert sd["conv1.scale"].shape == (1,) and "layer2.0.downsample.0.weight" in sd  # shortcut float
    planes = torch.cat([v.flatten() for k, v in sd.items() if k.endswith(("pweight", "nweight"))])
    assert set(planes.unique().tolist()) == {0.0, 1.0}
    _close(want, spec_forward(sd, x, abits=4))
    back = import_bsq_checkpoint(path, TINY, abits=4)  # and back: the same model exactly
    assert scheme_of(back) == scheme_of(model)
    np.testing.assert_array_equal(_keras(back, x), want)

    flt = torch.load(export_bsq_checkpoint(model, str(tmp_path / "f.pth"), form="float"), weights_only=True)
    assert flt["Nbit_dict"] == saved["Nbit_dict"]
    fsd = {k[len("module."):]: v for k, v in flt["state_dict"].items()}
    _close(want, spec_forward(fsd, x, abits=4))
    for key, value in float_state(sd).items():  # BSQ's to_float of the bit form = the float form
        np.testing.assert_allclose(np.asarray(value), fsd[key].numpy(), rtol=1e-6, atol=1e-7)
    PlainResNet().load_state_dict(fsd, strict=True)  # a plain ResNet takes the float form
    q = torch.load(export_torch_checkpoint(model, str(tmp_path / "q.pth")), weights_only=True)
    assert "layer2.0.shortcut.0.weight" in q and "linear.bias" in q  # QuadraLib's names, float form


def test_bsq_bit_form_is_refused_where_float_is_read(tmp_path):
    state, nbits = bsq_bit_state()
    path = _save({"state_dict": state, "Nbit_dict": nbits}, tmp_path / "bits.pth")
    with pytest.raises(ValueError, match="BSQ's bit form .*apps/bsq.py --mode=convert --from_torch") as err:
        import_torch_checkpoint(path, TINY)
    assert "\n" not in str(err.value)
    assert set(read_state_dict(path)) == set(state)
