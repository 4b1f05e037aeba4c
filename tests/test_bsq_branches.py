"""BSQ per-branch bits of quadratic layers: each branch kernel (W_a, W_b, W_c of `ours`) has its own
planes, scale, precision, re-quantization and Lasso weight; reports and save/load keep them."""

import os

import numpy as np
import pytest
import keras
from keras import ops

from quadkeras.bsq import (bsq_layer, bsq_report, requantize_model, scheme_of, set_bsq_decay, to_bsq,
                           to_float, to_representation)
from quadkeras.bsq.legacy import BitQuantWrapper
from quadkeras.bsq import bitplanes
from quadkeras.layers import QuadConv2D


def _quad_model(groups=1):
    inputs = keras.Input((5, 5, 2))
    x = QuadConv2D(4, 3, padding="same", neuron="ours", groups=groups, name="qconv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs)


def _zero_msb(wrapper, branch):
    """Keep the branch's codes but halve their magnitudes' range: its MSB plane becomes all zero."""
    q = wrapper.kernel_quantizer
    codes, scale, n = q.get_codes(branch)
    q.set_codes(np.sign(codes) * (np.abs(codes) % 2 ** (n - 1)), scale, n, branch=branch)


@pytest.mark.parametrize("groups", [1, 2])
def test_branches_have_own_scale_and_fuse_into_the_layer_layout(groups):
    model = _quad_model(groups)
    bsq = to_bsq(model, bits=4)
    w = bsq.get_layer("qconv")
    q = w.kernel_quantizer
    assert q.branches == ["a", "b", "c"]
    kernel = ops.convert_to_numpy(model.get_layer("qconv").kernel)
    fused = q.dequantized()
    for branch, channels in zip(q.branches, model.get_layer("qconv")._kernel_branch_index):
        codes, scale = bitplanes.quantize_codes(kernel[..., channels], 4)  # scale = max|W_branch|
        np.testing.assert_allclose(q.dequantized(branch), scale * codes / 15.0, atol=1e-6)
        np.testing.assert_allclose(fused[..., channels], q.dequantized(branch), atol=0)
    np.testing.assert_allclose(ops.convert_to_numpy(w.quantized_kernel()), fused, atol=1e-6)
    x = np.random.RandomState(1).randn(2, 5, 5, 2).astype("float32")
    np.testing.assert_allclose(bsq.predict_on_batch(x), to_float(bsq).predict_on_batch(x), atol=1e-5)


def test_forced_requantization_gives_each_branch_its_own_precision():
    bsq = to_bsq(_quad_model(), bits=6)
    w = bsq.get_layer("qconv")
    q = w.kernel_quantizer
    _zero_msb(w, "b")
    before = q.dequantized()
    requantize_model(bsq, increase=False)
    assert q.current_precision("b") < 6 == q.current_precision("a") == q.current_precision("c")
    np.testing.assert_allclose(q.dequantized(), before, rtol=1e-5, atol=1e-7)  # values kept
    scheme = scheme_of(bsq)
    assert scheme["qconv[b]"] == q.current_precision("b") and scheme["qconv[a]"] == 6
    report = bsq_report(bsq)
    rows = {row["name"]: row for row in report["layers"]}
    assert [rows[f"qconv[{b}]"]["precision"] for b in "abc"] == [6, q.current_precision("b"), 6]
    params = {b: q.part_params(b) for b in "abc"}
    assert sum(params.values()) == q.num_params and all(rows[f"qconv[{b}]"]["params"] == params[b] for b in "abc")
    expected_bits = sum(params[b] * rows[f"qconv[{b}]"]["precision"] for b in "abc") + rows["fc"]["params"] * 6
    assert report["total_bits"] == expected_bits
    assert report["average_bits"] == pytest.approx(expected_bits / (q.num_params + rows["fc"]["params"]))


def test_regularizer_is_the_formula_summed_over_branches():
    bsq = to_bsq(_quad_model(), bits=5)
    w = bsq.get_layer("qconv")
    q = w.kernel_quantizer
    _zero_msb(w, "c")
    requantize_model(bsq, increase=False)  # branch c now has fewer active planes than a, b
    rng = np.random.RandomState(0)
    for branch in q.branches:  # continuous planes, as mid-search
        for name in ("pos_planes", "neg_planes"):
            var = q.part_variable(name, branch)
            assert var.path == f"qconv/kernel/{name}_{branch}"
            var.assign(rng.uniform(0, 2, tuple(var.shape)).astype("float32"))
    total = set_bsq_decay(bsq, 0.7)
    expected = 0.0
    for b in q.branches:
        pos, neg = (ops.convert_to_numpy(q.part_variable(v, b)).astype("float64")
                    for v in ("pos_planes", "neg_planes"))
        n = q.current_precision(b)
        axes = tuple(range(pos.ndim - 1))
        lasso = np.sqrt(1e-8 + (pos ** 2).sum(axes) + (neg ** 2).sum(axes))[:n].sum()
        expected += pos[..., 0].size * n * lasso
    assert q.current_precision("c") < 5
    np.testing.assert_allclose(float(ops.convert_to_numpy(q.regularization())), 0.7 / total * expected, rtol=1e-5)


def test_save_load_and_finetune_keep_per_branch_bits(tmp_path):
    bsq = to_bsq(_quad_model(), bits=6)
    _zero_msb(bsq.get_layer("qconv"), "a")
    requantize_model(bsq, increase=False)
    scheme = scheme_of(bsq)
    assert scheme["qconv[a]"] < scheme["qconv[b]"] == 6
    path = os.path.join(tmp_path, "q.keras")
    bsq.save(path)
    loaded = keras.models.load_model(path)
    assert scheme_of(loaded) == scheme and loaded.get_layer("qconv").kernel_quantizer.per_branch
    np.testing.assert_array_equal(loaded.get_layer("qconv").kernel_quantizer.dequantized(),
                                  bsq.get_layer("qconv").kernel_quantizer.dequantized())
    finetune = to_representation(loaded, "float")
    assert scheme_of(finetune) == scheme
    np.testing.assert_allclose(finetune.get_layer("qconv").kernel_quantizer.dequantized(),
                               bsq.get_layer("qconv").kernel_quantizer.dequantized(), rtol=1e-6, atol=1e-7)
    copied = to_bsq(_quad_model(), scheme=loaded)  # --dict: the per-branch scheme is copied
    assert scheme_of(copied) == scheme
    assert scheme_of(to_bsq(_quad_model(), scheme={"qconv": 3, "fc": 4})) == {
        "qconv[a]": 3, "qconv[b]": 3, "qconv[c]": 3, "fc": 4}


def test_fused_kernel_mode_and_files_without_the_flag_keep_one_precision(tmp_path):
    layer = bsq_layer(QuadConv2D(4, 3, neuron="ours"), bits=4, per_branch=False)
    layer.build((None, 5, 5, 2))
    assert layer.kernel_quantizer.branches == [None]
    codes, scale = bitplanes.quantize_codes(ops.convert_to_numpy(layer.layer.kernel), 4)
    np.testing.assert_allclose(layer.kernel_quantizer.dequantized(), scale * codes / 15.0, atol=1e-6)
    # a BitQuantWrapper config written before per-branch bits existed (no `per_branch`)
    config = {"name": "q", "layer": keras.saving.serialize_keras_object(QuadConv2D(4, 3, neuron="ours")),
              "bits": 4, "representation": "bits", "quantize_bias": False}
    old = BitQuantWrapper.from_config(config)
    old.build((None, 5, 5, 2))
    assert old.kernel_quantizer.branches == [None] and old.bias_quantizer is None
    with pytest.raises(ValueError, match="Invalid branch=None .*expected one of 'a', 'b', 'c'"):
        to_bsq(_quad_model(), bits=4).get_layer("qconv").kernel_quantizer.get_codes()
