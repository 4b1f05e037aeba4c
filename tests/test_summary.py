"""Model summary: totals match count_params / count_macs, bits, memory, BOPs, JSON, app."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import keras

from quadkeras.models import build_model
from quadkeras.summary import count_macs, layer_bits, print_summary, summarize
from tests.backend_utils import assert_png
from tests.test_autobuilder_fixtures import RESNET_TINY, VGG_TINY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.jax
@pytest.mark.parametrize("config", [RESNET_TINY, VGG_TINY], ids=["resnet", "vgg"])
def test_totals_equal_count_params_and_macs(config):
    model = build_model(config)
    s = summarize(model)
    assert s.totals["params"] == model.count_params()
    assert s.totals["params_trainable"] == sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert s.totals["macs"] == count_macs(model)
    assert s.totals["quad_products"] == count_macs(model) - count_macs(model, include_products=False)
    assert [r["name"] for r in s.rows] == [layer.name for layer in model.layers[1:]]


@pytest.mark.jax
def test_rows_for_float_model():
    model = build_model(VGG_TINY)
    rows = {r["name"]: r for r in summarize(model).rows}
    conv = rows["conv1"]
    assert (conv["type"], conv["neuron"], conv["output_shape"]) == ("QuadConv2D", "ours", [8, 8, 4])
    assert conv["params_non_trainable"] > 0  # per-branch BN moving statistics
    assert (conv["weight_bits"], conv["activation_bits"]) == (32, 32)
    assert conv["bops"] == conv["macs"] * 32 * 32
    assert conv["memory_bytes"] == 4 * conv["params"]
    assert rows["logits"]["neuron"] is None and rows["pool1"]["weight_bits"] is None
    assert rows["pool1"]["macs"] == 0 and rows["pool1"]["memory_bytes"] == 0


def test_quantized_model_bits_memory_and_bops(tmp_path):
    from quadkeras.quantize import quantize_model, scheme_from_flags

    float_model = build_model(RESNET_TINY)
    model = quantize_model(float_model, scheme_from_flags("lsq", 4, 4))
    s = summarize(model)
    assert s.totals["params"] == model.count_params()
    assert s.totals["macs"] == count_macs(float_model)
    rows = {r["name"]: r for r in s.rows}
    row = rows["stage1_block2_conv1"]
    layer = model.get_layer("stage1_block2_conv1")
    assert row["type"] == "QuantizeWrapper(QuadConv2D)" and row["neuron"] == "ours"
    assert (row["weight_bits"], row["activation_bits"]) == (4, 4) == layer_bits(layer)
    assert row["bops"] == row["macs"] * 16
    kernel = int(np.prod(layer.layer.kernel.shape))
    assert row["memory_bytes"] == (kernel * 4 + (row["params"] - kernel) * 32 + 7) // 8
    assert s.totals["memory_bytes"] < summarize(float_model).totals["memory_bytes"]
    path = str(tmp_path / "s.json")
    text = s.to_json(path)
    with open(path) as f:
        assert json.load(f) == json.loads(text) == s.to_dict()


@pytest.mark.jax
def test_format_lists_every_layer_and_totals():
    model = build_model(VGG_TINY)
    lines = []
    s = print_summary(model, print_fn=lines.append)
    text = lines[0]
    for row in s.rows:
        assert row["name"] in text
    assert "Total" in text and f"{model.count_params():,}" in text and "BOPs" in text


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the app's code paths are covered in-process on every backend")
def test_summary_app_writes_json(tmp_path):
    from quadkeras.autobuilder import write_config

    config_path, path = str(tmp_path / "tiny.yaml"), str(tmp_path / "summary.json")
    write_config(RESNET_TINY, config_path)
    cmd = [sys.executable, os.path.join(REPO, "apps", "summary.py"), f"--model={config_path}",
           "--input_shape=16,16,1", f"--json={path}", f"--plot={tmp_path / 'layers.png'}",
           "--quantize=lsq", "--weight_bits=4", "--activation_bits=2"]  # deprecated spellings
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stage2_block2_conv2" in proc.stdout and "Total" in proc.stdout
    assert_png(tmp_path / "layers.png")
    with open(path) as f:
        data = json.load(f)
    from quadkeras.quantize.model import quant_scheme, quantize_model

    model = quantize_model(build_model(config_path, input_shape=(16, 16, 1)),
                           quant_scheme("lsq", 4, 2))
    assert data["totals"]["params"] == model.count_params()
    assert data["totals"]["macs"] == count_macs(model)
    bits = {(row["weight_bits"], row["activation_bits"]) for row in data["rows"]}
    assert (4, 2) in bits  # --weight_bits / --activation_bits reached the scheme
    keras.backend.clear_session()
