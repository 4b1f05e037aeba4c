"""BSQ per-branch bits of quadratic layers: each branch kernel (W_a, W_b, W_c of `ours`) has its own
planes, scale, precision, re-quantization and Lasso weight; reports and save/load keep them."""

import os

import numpy as np
import pytest
import keras
from keras import ops

from quadkeras.bsq import (BitQuantWrapper, bsq_report, requantize_model, scheme_of, set_bsq_decay, to_bsq,
                           to_float, to_representation)
from quadkeras.bsq import bitplanes
from quadkeras.layers import QuadConv2D


def _quad_model(groups=1):
    inputs = keras.Input((5, 5, 2))
    x = QuadConv2D(4, 3, padding="same", neuron="ours", groups=groups, name="qconv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs)


def _zero_msb(wrapper, part):
    """Keep the part's codes but halve their magnitudes' range: its MSB plane becomes all zero."""
    codes, scale, n = wrapper.get_codes(part)
    wrapper.set_codes(np.sign(codes) * (np.abs(codes) % 2 ** (n - 1)), scale, n, part=part)


@pytest.mark.parametrize("groups", [1, 2])
def test_branches_have_own_scale_and_fuse_into_the_layer_layout(groups):
    model = _quad_model(groups)
    bsq = to_bsq(model, bits=4)
    w = bsq.get_layer("qconv")
    assert w.kernel_parts == ["kernel_a", "kernel_b", "kernel_c"] and w.branch_bits
    kernel = ops.convert_to_numpy(model.get_layer("qconv").kernel)
    fused = w.dequantized_kernel()
    for part, channels in zip(w.kernel_parts, model.get_layer("qconv")._kernel_branch_index):
        codes, scale = bitplanes.quantize_codes(kernel[..., channels], 4)  # scale = max|W_branch|
        np.testing.assert_allclose(w.dequantized_kernel(part), scale * codes / 15.0, atol=1e-6)
        np.testing.assert_allclose(fused[..., channels], w.dequantized_kernel(part), atol=0)
    np.testing.assert_allclose(ops.convert_to_numpy(w.quantized_kernel()), fused, atol=1e-6)
    x = np.random.RandomState(1).randn(2, 5, 5, 2).astype("float32")
    np.testing.assert_allclose(bsq.predict_on_batch(x), to_float(bsq).predict_on_batch(x), atol=1e-5)


def test_forced_requantization_gives_each_branch_its_own_precision():
    bsq = to_bsq(_quad_model(), bits=6)
    w = bsq.get_layer("qconv")
    _zero_msb(w, "kernel_b")
    before = w.dequantized_kernel()
    requantize_model(bsq, increase=False)
    assert w.current_precision("kernel_b") < 6 == w.current_precision("kernel_a") == w.current_precision("kernel_c")
    np.testing.assert_allclose(w.dequantized_kernel(), before, rtol=1e-5, atol=1e-7)  # values kept
    scheme = scheme_of(bsq)
    assert scheme["qconv[b]"] == w.current_precision("kernel_b") and scheme["qconv[a]"] == 6
    report = bsq_report(bsq)
    rows = {row["name"]: row for row in report["layers"]}
    assert [rows[f"qconv[{b}]"]["precision"] for b in "abc"] == [6, w.current_precision("kernel_b"), 6]
    params = {b: w.part_params(f"kernel_{b}") for b in "abc"}
    assert sum(params.values()) == w.num_params and all(rows[f"qconv[{b}]"]["params"] == params[b] for b in "abc")
    expected_bits = sum(params[b] * rows[f"qconv[{b}]"]["precision"] for b in "abc") + rows["fc"]["params"] * 6
    assert report["total_bits"] == expected_bits
    assert report["average_bits"] == pytest.approx(expected_bits / (w.num_params + rows["fc"]["params"]))


def test_regularizer_is_the_formula_summed_over_branches():
    bsq = to_bsq(_quad_model(), bits=5)
    w = bsq.get_layer("qconv")
    _zero_msb(w, "kernel_c")
    requantize_model(bsq, increase=False)  # branch c now has fewer active planes than a, b
    rng = np.random.RandomState(0)
    for part in w.kernel_parts:  # continuous planes, as mid-search
        for name in ("pos_planes", "neg_planes"):
            var = getattr(w, f"{name}_{part[-1]}")
            var.assign(rng.uniform(0, 2, tuple(var.shape)).astype("float32"))
    total = set_bsq_decay(bsq, 0.7)
    expected = 0.0
    for part in w.kernel_parts:
        b = part[-1]
        pos, neg = (ops.convert_to_numpy(getattr(w, f"{v}_{b}")).astype("float64")
                    for v in ("pos_planes", "neg_planes"))
        n = w.current_precision(part)
        axes = tuple(range(pos.ndim - 1))
        lasso = np.sqrt(1e-8 + (pos ** 2).sum(axes) + (neg ** 2).sum(axes))[:n].sum()
        expected += pos[..., 0].size * n * lasso
    assert w.current_precision("kernel_c") < 5
    np.testing.assert_allclose(float(ops.convert_to_numpy(w.regularization())), 0.7 / total * expected, rtol=1e-5)


def test_save_load_and_finetune_keep_per_branch_bits(tmp_path):
    bsq = to_bsq(_quad_model(), bits=6)
    _zero_msb(bsq.get_layer("qconv"), "kernel_a")
    requantize_model(bsq, increase=False)
    scheme = scheme_of(bsq)
    assert scheme["qconv[a]"] < scheme["qconv[b]"] == 6
    path = os.path.join(tmp_path, "q.keras")
    bsq.save(path)
    loaded = keras.models.load_model(path)
    assert scheme_of(loaded) == scheme and loaded.get_layer("qconv").per_branch
    np.testing.assert_array_equal(loaded.get_layer("qconv").dequantized_kernel(),
                                  bsq.get_layer("qconv").dequantized_kernel())
    finetune = to_representation(loaded, "float")
    assert scheme_of(finetune) == scheme
    np.testing.assert_allclose(finetune.get_layer("qconv").dequantized_kernel(),
                               bsq.get_layer("qconv").dequantized_kernel(), rtol=1e-6, atol=1e-7)
    copied = to_bsq(_quad_model(), scheme=loaded)  # --dict: the per-branch scheme is copied
    assert scheme_of(copied) == scheme
    assert scheme_of(to_bsq(_quad_model(), scheme={"qconv": 3, "fc": 4})) == {
        "qconv[a]": 3, "qconv[b]": 3, "qconv[c]": 3, "fc": 4}


def test_fused_kernel_mode_and_files_without_the_flag_keep_one_precision(tmp_path):
    layer = BitQuantWrapper(QuadConv2D(4, 3, neuron="ours"), bits=4, per_branch=False)
    layer.build((None, 5, 5, 2))
    assert layer.kernel_parts == ["kernel"] and not layer.branch_bits
    codes, scale = bitplanes.quantize_codes(ops.convert_to_numpy(layer.layer.kernel), 4)
    np.testing.assert_allclose(layer.dequantized_kernel(), scale * codes / 15.0, atol=1e-6)
    config = layer.get_config()
    del config["per_branch"]  # a config written before per-branch bits existed
    assert BitQuantWrapper.from_config(config).kernel_parts == ["kernel"]
    with pytest.raises(ValueError, match="one kernel per branch; expected one of kernel_a, kernel_b, kernel_c"):
        to_bsq(_quad_model(), bits=4).get_layer("qconv").get_codes("kernel")
