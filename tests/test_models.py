"""Model zoo: exact parameter counts (QuadraLib's networks), MACs, configs and overrides."""

import glob
import os

import keras
import numpy as np
import pytest

from quadkeras.layers import QuadConv2D
from quadkeras.models import ZOO, build_model, candidate_layer_names, load_config
from quadkeras.summary import count_macs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# QuadraLib's code: exact trainable parameters (10 classes); MACs as QuadraLib's hooks count them.
EXPECTED = {
    "qresnet14": (518_938, 78.6),
    "resnet32": (466_906, 69.1),
    "resnet20": (272_474, None),
    "qvgg7": (12_304_330, 430.0),
    "vgg13": (14_728_266, 313.2),
    "qvgg13": (44_182_986, None),
}


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_zoo_parameter_counts_and_macs(name):
    model = build_model(name)
    params, macs = EXPECTED[name]
    assert _trainable(model) == params
    linear = count_macs(model, include_products=False)
    if macs is not None:
        assert round(linear / 1e6, 1) == macs
    assert count_macs(model) >= linear


def test_qresnet14_structure_and_forward():
    model = build_model("qresnet14")
    quads = [layer for layer in model.layers if isinstance(layer, QuadConv2D)]
    assert len(quads) == 12 and all(q.neuron == "ours" and not q.use_bias for q in quads)
    assert model.get_layer("stem_conv").__class__.__name__ == "Conv2D"
    assert model.get_layer("stage2_block1_shortcut").__class__.__name__ == "Conv2D"
    out = model(np.random.default_rng(0).random((2, 32, 32, 3), "float32"), training=False)
    assert tuple(out.shape) == (2, 10)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "models", "*.yaml"))))
def test_yaml_configs_mirror_the_zoo(path):
    name = os.path.splitext(os.path.basename(path))[0]
    if name in ZOO:
        assert load_config(path) == ZOO[name]


def test_overrides_make_layers_first_order_or_remove_them():
    base = build_model("qresnet14")
    config = load_config("qresnet14")
    config["overrides"] = {"stage3_block2_conv2": {"type": "conv"}, "stage1_block2": {"type": "remove"}}
    model = build_model(config)
    assert model.get_layer("stage3_block2_conv2").__class__.__name__ == "Conv2D"
    assert "stage1_block2_conv1" not in [layer.name for layer in model.layers]
    assert model.count_params() < base.count_params()

    vgg = load_config("qvgg13")
    vgg["overrides"] = {f"conv{i}": {"type": "remove"} for i in (6, 7, 9, 10, 12, 13)}
    assert _trainable(build_model(vgg)) == EXPECTED["qvgg7"][0]  # QuadraLib auto-builder: QVGG-7 from QVGG-13


def test_candidate_layer_names():
    assert candidate_layer_names("qvgg7") == [f"conv{i}" for i in range(1, 8)]
    names = candidate_layer_names("resnet20")
    assert len(names) == 18 and names[0] == "stage1_block1_conv1"


def test_input_shape_and_classes_override():
    model = build_model("resnet20", num_classes=3, input_shape=(16, 16, 1))
    assert model.input_shape == (None, 16, 16, 1) and model.output_shape == (None, 3)


@pytest.mark.parametrize("bad, match", [
    ({"family": "mlp"}, "family"),
    ({"overrides": {"nope": {"type": "conv"}}}, "override 'nope'"),
    ({"overrides": {"stage2_block1": {"type": "remove"}}}, "only allowed"),
    ({"conv": {"type": "quad", "neuron": "t9"}}, "neuron"),
    ({"conv": {"type": "cubic"}}, "type"),
    ({"num_classes": 0}, "num_classes"),
    ({"padding": "torch"}, "padding.*'pytorch', 'same'"),
    ({"init": "glorot"}, "init.*'pytorch', 'keras'"),
])
def test_bad_configs_give_one_line_errors(bad, match):
    config = {**load_config("qresnet14"), **bad}
    with pytest.raises(ValueError, match=match) as err:
        build_model(config)
    assert "\n" not in str(err.value)


def test_unknown_model_name_lists_the_zoo():
    with pytest.raises(ValueError, match="qresnet14") as err:
        build_model("resnet999")
    assert "\n" not in str(err.value)


def test_zoo_pads_stride2_convs_like_pytorch_unless_same_is_asked():
    model = build_model("resnet20")
    stride2 = model.get_layer("stage2_block1_conv1")
    assert stride2.padding == "valid" and model.get_layer("stage2_block1_conv1_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("stage1_block1_conv1").padding == "same"  # stride 1: identical to padding=1
    assert model.get_layer("stage2_block1_shortcut").padding == "valid"  # 1x1 stride 2, padding 0
    quad = build_model("qresnet14").get_layer("stage3_block1_conv1")
    assert quad.padding == ((1, 1), (1, 1))
    keras_style = build_model("qresnet14", padding="same")
    assert keras_style.get_layer("stage3_block1_conv1").padding == "same"
    assert _trainable(keras_style) == EXPECTED["qresnet14"][0]
    x = np.random.default_rng(0).random((2, 32, 32, 3), "float32")
    assert tuple(model(x).shape) == (2, 10)


def _np(v):
    return np.asarray(keras.ops.convert_to_numpy(v))


def test_default_init_follows_the_pytorch_reference():
    resnet = build_model("qresnet14")
    stem = _np(resnet.get_layer("stem_conv").kernel)  # PyTorch default: U(+-1/sqrt(fan_in))
    assert np.abs(stem).max() <= 1 / np.sqrt(27) and np.abs(stem).max() > 0.9 / np.sqrt(27)
    quad = _np(resnet.get_layer("stage2_block2_conv1").kernel)
    assert np.abs(quad).max() <= 1 / np.sqrt(9 * 32)
    head = resnet.get_layer("logits")
    assert 0 < np.abs(_np(head.bias)).max() <= 1 / 8.0 and np.abs(_np(head.kernel)).max() <= 1 / 8.0
    vgg = build_model({"family": "vgg", "cfg": [64, "M"], "input_shape": [8, 8, 3], "num_classes": 1000,
                       "conv": {"type": "quad"}})
    conv = _np(vgg.get_layer("conv1").kernel)  # QuadraLib VGG: kaiming_normal, untruncated
    assert abs(conv.std() / np.sqrt(2 / 27) - 1) < 0.1 and np.abs(conv).max() > 2 * np.sqrt(2 / 27)
    assert abs(_np(vgg.get_layer("logits").kernel).std() - 0.01) < 0.001
    legacy = _np(build_model("qresnet14", init="keras").get_layer("stem_conv").kernel)
    assert legacy.std() > 2 * stem.std()  # he_normal
