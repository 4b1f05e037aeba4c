"""BSQ: bit planes, the `BitPlanes` quantizer, regulariser, precision adjustment, conversions, save/load."""

import os

import numpy as np
import pytest
import keras
from keras import ops

from quadkeras.bsq import (
    BitPlanes, BSQCallback, bsq_layer, bsq_report, format_report, is_bsq_layer, requantize_model, save_report,
    scheme_of, set_bsq_decay, shortcut_convs, to_bsq, to_float, to_representation)
from quadkeras.bsq import bitplanes
from quadkeras.layers import QuadConv2D, QuadDense


def _grad(fn, variable):
    """d fn() / d variable on the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = fn()
        return np.asarray(tape.gradient(loss, variable.value))
    if backend == "torch":
        variable.value.grad = None
        fn().backward()
        return variable.value.grad.numpy()
    import jax

    def f(value):
        with keras.StatelessScope(state_mapping=[(variable, value)]):
            return fn()

    return np.asarray(jax.grad(f)(variable.value))


def _tiny_model(quad=False):
    inputs = keras.Input((6, 6, 2))
    if quad:
        x = QuadConv2D(4, 3, padding="same", neuron="t4", name="conv")(inputs)
    else:
        x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs)


# --------------------------------------------------------------- NumPy algebra
@pytest.mark.jax
def test_planes_roundtrip_and_carry():
    rng = np.random.RandomState(0)
    kernel = rng.randn(5, 7)
    codes, scale = bitplanes.quantize_codes(kernel, 6)
    pos, neg = bitplanes.codes_to_planes(codes, 6)
    assert set(np.unique(pos)) <= {0.0, 1.0} and not np.any(pos * neg)
    np.testing.assert_array_equal(bitplanes.planes_to_codes(pos, neg, 6), codes)
    expected = scale * np.rint(np.abs(kernel) / np.abs(kernel).max() * 63) * np.sign(kernel) / 63
    np.testing.assert_allclose(bitplanes.dequantize(codes, scale, 6), expected, rtol=1e-6)
    # Continuous planes: a value 1.6 in bit 0 carries into bit 1 (1.6 + 2*1 -> 4 after rounding)
    pos = np.array([[1.6, 1.0, 0.0]])
    neg = np.array([[0.0, 0.0, 0.2]])
    assert bitplanes.planes_to_codes(pos, neg, 3).tolist() == [3]  # 1.6 + 2 - 0.8 = 2.8 -> 3
    assert bitplanes.codes_to_planes(np.array([4]), 3)[0].tolist() == [[0.0, 0.0, 1.0]]


@pytest.mark.jax
def test_adjust_precision_keeps_values():
    rng = np.random.RandomState(1)
    codes = rng.randint(-15, 16, size=(4, 4)) * 4  # LSB planes 0,1 zero, fits 6 bits of 8
    new, scale, n = bitplanes.adjust_precision(codes, 0.7, 8)
    assert n == 4
    np.testing.assert_allclose(bitplanes.dequantize(new, scale, n), bitplanes.dequantize(codes, 0.7, 8), rtol=1e-6)
    zero, _, n0 = bitplanes.adjust_precision(np.zeros((3,), "int64"), 1.0, 8)
    assert n0 == 1 and not zero.any()


@pytest.mark.jax
def test_ones_percent_msb_first():
    assert bitplanes.ones_percent(np.array([1, -3, 2, 0]), 2) == [50.0, 50.0]
    assert bitplanes.ones_percent(np.array([4, 0]), 3) == [50.0, 0.0, 0.0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="representation"):
        bsq_layer(keras.layers.Dense(2), representation="int")
    with pytest.raises(ValueError, match="bits"):
        bsq_layer(keras.layers.Dense(2), bits=0)
    with pytest.raises(ValueError, match="role"):
        BitPlanes(4, role="activation")
    with pytest.raises(ValueError, match="bias_quantizer"):
        bsq_layer(keras.layers.Dense(2, use_bias=False), quantize_bias=True)
    with pytest.raises(ValueError, match="no_such"):
        to_bsq(_tiny_model(), scheme={"no_such": 4})
    with pytest.raises(ValueError, match="prun_int"):
        BSQCallback(prun_int=0)


# --------------------------------------------------------------------- wrapper
@pytest.mark.jax
@pytest.mark.parametrize("quad", [False, True])
def test_bit_representation_reconstructs_quantized_kernel(quad):
    model = _tiny_model(quad)
    bsq = to_bsq(model, bits=5)
    x = np.random.RandomState(0).randn(2, 6, 6, 2).astype("float32")
    reference = to_float(bsq)
    for layer in bsq.layers:
        if is_bsq_layer(layer):
            kernel = keras.ops.convert_to_numpy(model.get_layer(layer.name).kernel)
            expected = np.zeros(kernel.shape)
            # the quadratic `t4` conv: each branch kernel with its own scale max|W_branch|
            index = layer.layer._kernel_branch_index if quad and layer.name == "conv" else [slice(None)]
            assert len(index) == (2 if quad and layer.name == "conv" else 1)
            for channels in index:
                codes, scale = bitplanes.quantize_codes(kernel[..., channels], 5)
                expected[..., channels] = scale * codes / 31.0
            np.testing.assert_allclose(ops.convert_to_numpy(layer.quantized_kernel()), expected, atol=1e-6)
            np.testing.assert_allclose(ops.convert_to_numpy(reference.get_layer(layer.name).kernel), expected,
                                       atol=1e-6)
    np.testing.assert_allclose(bsq.predict_on_batch(x), reference.predict_on_batch(x), atol=1e-5)
    conv = {"conv[a]": 5, "conv[b]": 5} if quad else {"conv": 5}
    assert scheme_of(bsq) == {**conv, "dw": 5, "fc": 5}
    assert bsq.get_layer("fc").quantization_bits() == {"weight": 5, "activation": None}


def test_regularizer_gradient_matches_formula():
    layer = bsq_layer(keras.layers.Dense(3), bits=4)
    layer.build((None, 5))
    q = layer.kernel_quantizer
    rng = np.random.RandomState(0)
    pos, neg = rng.uniform(0, 2, (5, 3, 4)), rng.uniform(0, 2, (5, 3, 4))
    q.part_variable("pos_planes").assign(pos.astype("float32"))
    q.part_variable("neg_planes").assign(neg.astype("float32"))
    q.part_variable("precision").assign(3.0)  # plane 3 inactive
    q.reg_strength.assign(0.01)
    grad = _grad(q.regularization, q.part_variable("pos_planes"))
    norms = np.sqrt(1e-8 + (pos ** 2).sum(axis=(0, 1)) + (neg ** 2).sum(axis=(0, 1)))
    coef = 0.01 * 15 * 3  # reg_strength * #params * precision
    expected = coef * pos / norms * np.array([1, 1, 1, 0])
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)
    value = float(ops.convert_to_numpy(q.regularization()))
    np.testing.assert_allclose(value, coef * norms[:3].sum(), rtol=1e-5)
    layer(np.ones((1, 5), "float32"), training=True)  # the lasso is the quantizer's add_loss
    np.testing.assert_allclose(float(ops.convert_to_numpy(layer.losses[0])), value, rtol=1e-6)


def test_regularizer_weights_layers_by_param_share():
    bsq = to_bsq(_tiny_model(), bits=8)
    total = set_bsq_decay(bsq, 0.5)
    assert total == 2 * 3 * 3 * 4 + 3 * 3 * 4 + 4 * 3
    x = np.ones((2, 6, 6, 2), "float32")
    bsq(x, training=True)
    assert len(bsq.losses) == 3
    bsq(x, training=False)
    assert len(bsq.losses) == 0


def test_ste_gradient_passes_through_rounding():
    layer = bsq_layer(keras.layers.Dense(2, use_bias=False), bits=3)
    layer.build((None, 2))
    q = layer.kernel_quantizer
    x = np.array([[1.0, 2.0]], "float32")
    grad = _grad(lambda: ops.sum(layer(x)), q.part_variable("pos_planes"))
    scale = float(ops.convert_to_numpy(q.part_variable("scale")))
    expected = scale * x.T[:, :, None] * np.ones((2, 2, 1)) * (2.0 ** np.arange(3) / 7.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


# ------------------------------------------------------- precision adjustment
def test_precision_drops_when_planes_are_zeroed():
    bsq = to_bsq(_tiny_model(), bits=8)
    layer = bsq.get_layer("conv")
    q = layer.kernel_quantizer
    before = q.dequantized()
    pos = ops.convert_to_numpy(q.part_variable("pos_planes")).copy()
    neg = ops.convert_to_numpy(q.part_variable("neg_planes")).copy()
    pos[..., 7] = neg[..., 7] = 0.0  # MSB
    pos[..., 0] = neg[..., 0] = 0.0  # LSB
    q.part_variable("pos_planes").assign(pos)
    q.part_variable("neg_planes").assign(neg)
    kept = q.dequantized()
    assert not np.allclose(kept, before)
    scheme = requantize_model(bsq)
    assert scheme["conv"] <= 6 and scheme["fc"] >= 7
    np.testing.assert_allclose(q.dequantized(), kept, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.quantized_kernel()), kept, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.layer.kernel), kept, rtol=1e-5, atol=1e-7)  # synced
    assert not ops.convert_to_numpy(q.part_variable("pos_planes"))[..., scheme["conv"]:].any()


@pytest.mark.jax
def test_requantization_matches_reference_port_with_overflow():
    """Ours (LSB first, fixed 8 planes) vs a NumPy port of BSQ's quant() + pruning()."""
    from tests import bsq_reference as ref

    rng = np.random.RandomState(3)
    outcomes = set()
    for trial in range(300):
        n = rng.randint(1, 9)
        hi = rng.choice([0.3, 1.0, 2.0])
        pos = rng.uniform(0, hi, size=(4, 3, n)) * (rng.rand(n) > 0.3)  # some planes all zero
        neg = rng.uniform(0, hi, size=(4, 3, n)) * (rng.rand(n) > 0.3)
        rp, rn, rs, rbits = ref.prune(*ref.quant(pos, neg, 0.7, n))
        ours_pos = np.zeros((4, 3, 8))
        ours_neg = np.zeros((4, 3, 8))
        ours_pos[..., :n], ours_neg[..., :n] = pos[..., ::-1], neg[..., ::-1]  # MSB first -> LSB first
        codes, scale, grown = bitplanes.requantize_planes(ours_pos, ours_neg, 0.7, n)
        codes, scale, bits = bitplanes.adjust_precision(codes, scale, grown)
        assert bits == rbits, trial
        np.testing.assert_allclose(bitplanes.dequantize(codes, scale, bits), ref.kernel(rp, rn, rs, rbits),
                                   rtol=1e-6, atol=1e-7)
        overflow = np.abs(bitplanes.rounded_codes(ours_pos, ours_neg, n)).max() > 2 ** n - 1
        outcomes.add("grew" if grown > n else ("clipped" if overflow else "fits"))
    assert outcomes == {"grew", "clipped", "fits"}  # all three paths exercised


def test_overflowing_layer_gains_one_bit_and_keeps_its_kernel():
    layer = bsq_layer(keras.layers.Dense(2), bits=8)
    layer.build((None, 3))
    q = layer.kernel_quantizer
    q.set_codes(np.array([[5, -3], [1, 0], [-15, 7]]), scale=0.6, precision=4)
    pos = ops.convert_to_numpy(q.part_variable("pos_planes")).copy()
    pos[0, 0, :4] = [1.0, 0.0, 0.0, 2.0]  # 1 + 2 * 8 = 17 > 15: overflows 4 bits
    q.part_variable("pos_planes").assign(pos)
    raw = np.array([[17, -3], [1, 0], [-15, 7]])
    clip_only = type(layer).from_config(layer.get_config())
    clip_only.build((None, 3))
    clip_only.set_weights(layer.get_weights())
    assert q.requantize() == 5 and q.current_precision() == 5
    np.testing.assert_allclose(q.dequantized(), 0.6 * raw / 15, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.quantized_kernel()), 0.6 * raw / 15, rtol=1e-6)
    assert set(np.unique(ops.convert_to_numpy(q.part_variable("pos_planes")))) <= {0.0, 1.0}
    assert clip_only.kernel_quantizer.requantize(increase=False) == 4  # clip-only variant
    np.testing.assert_allclose(clip_only.kernel_quantizer.dequantized(), 0.6 * np.minimum(raw, 15) / 15, rtol=1e-6)
    at_max = bsq_layer(keras.layers.Dense(1), bits=8).kernel_quantizer  # at 8 bits it clips
    at_max.build_from_value(np.zeros((1, 1), "float32"))
    at_max.part_variable("pos_planes").assign(np.full((1, 1, 8), 2.0, "float32"))
    assert at_max.requantize() == 8 and at_max.get_codes()[0].tolist() == [[255]]


# ----------------------------------------------------------- save / convert
@pytest.mark.jax
def test_save_load_keeps_scheme(tmp_path):
    model = _tiny_model(quad=True)
    bsq = to_bsq(model, scheme={"conv": 3, "fc": 5})
    assert scheme_of(bsq) == {"conv[a]": 3, "conv[b]": 3, "fc": 5}  # `t4`: bits per branch
    bsq.get_layer("conv").kernel_quantizer.requantize()
    path = os.path.join(tmp_path, "bsq.keras")
    bsq.save(path)
    loaded = keras.models.load_model(path)
    assert scheme_of(loaded) == scheme_of(bsq)
    x = np.random.RandomState(0).randn(2, 6, 6, 2).astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(x), bsq.predict_on_batch(x), atol=1e-5)
    again = to_bsq(_tiny_model(quad=True), bits=8, scheme=loaded)  # BSQ's --dict
    assert scheme_of(again) == scheme_of(loaded)


def test_float_finetune_representation_is_exact(tmp_path):
    bsq = to_bsq(_tiny_model(), scheme={"conv": 4, "dw": 2, "fc": 6})
    ft = to_representation(bsq, "float")
    x = np.random.RandomState(0).randn(2, 6, 6, 2).astype("float32")
    np.testing.assert_allclose(ft.predict_on_batch(x), bsq.predict_on_batch(x), atol=1e-5)
    back = to_representation(ft, "bits")
    assert scheme_of(back) == scheme_of(bsq)
    np.testing.assert_allclose(back.predict_on_batch(x), bsq.predict_on_batch(x), atol=1e-5)
    path = os.path.join(tmp_path, "ft.keras")
    ft.save(path)
    assert scheme_of(keras.models.load_model(path)) == {"conv": 4, "dw": 2, "fc": 6}


def test_report_json_and_png(tmp_path):
    bsq = to_bsq(_tiny_model(), scheme={"conv": 4, "fc": 8})
    report = bsq_report(bsq)
    params = {"conv": 72, "fc": 12}
    assert report["average_bits"] == pytest.approx((72 * 4 + 12 * 8) / 84)
    assert report["compression_rate"] == pytest.approx(32 / report["average_bits"])
    assert [len(r["ones_percent_msb_first"]) for r in report["layers"]] == [4, 8]
    assert {r["name"]: r["params"] for r in report["layers"]} == params
    save_report(report, os.path.join(tmp_path, "r.json"), os.path.join(tmp_path, "r.png"))
    assert os.path.getsize(os.path.join(tmp_path, "r.png")) > 1000
    assert "Average bits" in format_report(report)


def test_callback_requantizes_and_trains_planes_in_range():
    model = to_bsq(_tiny_model(), bits=8)
    set_bsq_decay(model, 100.0)
    model.compile(keras.optimizers.SGD(0.5, momentum=0.9), "mse")
    rng = np.random.RandomState(0)
    x, y = rng.randn(16, 6, 6, 2).astype("float32"), rng.randn(16, 3).astype("float32")
    callback = BSQCallback(prun_int=2)
    model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[callback])
    assert [h["epoch"] for h in callback.history] == [0, 2, "end"]
    planes = ops.convert_to_numpy(model.get_layer("conv").kernel_quantizer.part_variable("pos_planes"))
    assert set(np.unique(planes)) <= {0.0, 1.0}  # exact binary after the final re-quantization
    assert sum(scheme_of(model).values()) < 3 * 8  # a strong regulariser removed bits


@pytest.mark.slow
def test_digits_run_gives_mixed_scheme_close_to_fp(request, tmp_path):
    """FP tiny ResNet on digits -> 8 bits -> BSQ search (alpha 0.1), both training-engine runs:
    avg bits < 8 with a mixed scheme, accuracy ~ FP.

    Runs only when selected with `-m slow` (about a minute on JAX, several on torch/TF).
    """
    if "slow" not in (request.config.getoption("markexpr") or "") or "not slow" in request.config.getoption("markexpr"):
        pytest.skip("slow digits run: select with -m slow")
    from quadkeras.bsq import train_bsq
    from quadkeras.training import train

    config = {"family": "resnet", "input_shape": [16, 16, 1], "num_classes": 10, "stem_filters": 8,
              "stages": [{"filters": 8, "blocks": 1, "stride": 1}, {"filters": 16, "blocks": 1, "stride": 2}]}
    base = {"dataset": "digits", "batch_size": 64, "lr": 0.05, "schedule": "constant", "grad_clip": 0.0,
            "augment": "none", "tensorboard": False, "verbose": 0}
    fp = train({**base, "model": config, "epochs": 12, "wd": 5e-4, "work_dir": str(tmp_path / "fp")})
    search = train_bsq({**base, "epochs": 6, "wd": 0.0, "bsq": "search", "init_from": str(tmp_path / "fp" / "last.keras"),
                    "wbits": 8, "abits": 0, "bsq_decay": 0.1, "bsq_prun_int": 2, "work_dir": str(tmp_path / "bsq")})
    bits = list(search["bsq"]["scheme"].values())
    assert fp["test_acc"] > 0.85
    assert search["bsq"]["average_bits"] < 8.0 and len(set(bits)) > 1, bits
    assert search["test_acc"] >= fp["test_acc"] - 0.04, (search["test_acc"], fp["test_acc"])


@pytest.mark.jax
def test_quad_dense_ours_wrapper_matches_inner_layer_with_quantized_kernel():
    layer = bsq_layer(QuadDense(3, neuron="ours"), bits=3)
    x = np.random.RandomState(0).randn(4, 5).astype("float32")
    y = ops.convert_to_numpy(layer(x, training=False))
    kernel = layer.kernel_quantizer.dequantized()
    for branch, channels in zip("abc", layer.layer._kernel_branch_index):  # 3 bits per branch
        scale = float(ops.convert_to_numpy(layer.kernel_quantizer.part_variable("scale", branch)))
        assert len(np.unique((np.abs(kernel[..., channels]) / scale * 7).round(4))) <= 8
    expected = ops.convert_to_numpy(layer.layer.call_with_kernel(x, kernel, training=False))
    np.testing.assert_allclose(y, expected, atol=1e-5)
    assert layer.layer.kernel.trainable is False
    names = sorted(v.path.split("/")[-1] for v in layer.trainable_variables)
    assert names == ["bias", "branch_beta", "branch_gamma", *(f"{v}_{b}" for v in ("neg_planes", "pos_planes")
                                                               for b in "abc"), "scale_a", "scale_b", "scale_c"]


def test_bsq_model_saved_here_loads_under_another_backend(tmp_path):
    from tests.backend_utils import run_backend

    other = "tensorflow" if keras.backend.backend() != "tensorflow" else "torch"
    bsq = to_bsq(_tiny_model(), scheme={"conv": 3, "dw": 4, "fc": 6})
    path = os.path.join(tmp_path, "cross.keras")
    bsq.save(path)
    code = ("import keras, quadkeras.bsq as b; m = keras.models.load_model(%r); "
            "print(sorted(b.scheme_of(m).items()))" % path)
    out = run_backend(other, code)
    assert "[('conv', 3), ('dw', 4), ('fc', 6)]" in out


# ------------------------------------------------------ activation quantization
def _maxabs_numpy(x, bits):
    s = np.abs(x).max()
    top = 2 ** bits - 1
    return np.zeros_like(x) if s == 0 else s * np.sign(x) * np.round(np.abs(x) * top / s) / top


def test_maxabs_quantizer_and_bsq_activation_match_numpy():
    from quadkeras.bsq import BSQActivation
    from quadkeras.quantizers import MaxAbs

    x = np.random.RandomState(0).randn(2, 3, 5).astype("float32") * 4
    q = MaxAbs(bits=3)
    q.build(x.shape)
    np.testing.assert_allclose(ops.convert_to_numpy(q(x)), _maxabs_numpy(x, 3), rtol=1e-6, atol=1e-6)
    assert not ops.convert_to_numpy(q(np.zeros((2, 2), "float32"))).any()
    relu6 = BSQActivation(bits=4)
    np.testing.assert_allclose(ops.convert_to_numpy(relu6(x)), _maxabs_numpy(np.clip(x, 0, 6), 4), atol=1e-6)
    pact = BSQActivation(bits=2)  # PACT clip at alpha = 10 (x * 4 reaches > 10 here)
    np.testing.assert_allclose(ops.convert_to_numpy(pact(x * 4)), _maxabs_numpy(np.clip(x * 4, 0, 10), 2),
                               atol=1e-5)
    with pytest.raises(ValueError, match="abits"):
        to_bsq(_tiny_model(), abits=9)


def test_bsq_activation_ste_gradients():
    from quadkeras.bsq import BSQActivation

    x_np = np.array([[-1.0, 0.7, 3.3, 7.0, 12.0]], "float32")
    upstream = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]], "float32")
    up = ops.convert_to_tensor(upstream)
    x = keras.Variable(x_np)
    relu6 = BSQActivation(bits=4)
    grad = _grad(lambda: ops.sum(relu6(x.value, training=True) * up), x)
    np.testing.assert_allclose(grad, upstream * ((x_np > 0) & (x_np < 6)))  # STE through the rounding
    pact = BSQActivation(bits=3)
    pact.build(x_np.shape)
    alpha = pact.weights[0]
    grad = _grad(lambda: ops.sum(pact(x_np, training=True) * up), alpha)
    np.testing.assert_allclose(grad, 5.0)  # only x = 12 >= alpha = 10 feeds alpha


def test_block_activations_quantized_and_saved(tmp_path):
    from quadkeras.bsq import BSQActivation

    inputs = keras.Input((6, 6, 2))
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs))
    x = keras.layers.ReLU(name="block_out")(keras.layers.Conv2D(4, 3, padding="same", name="conv")(x))
    outputs = keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    bsq = to_bsq(keras.Model(inputs, outputs), bits=6, abits=2)
    assert type(bsq.get_layer("stem_relu")) is keras.layers.ReLU  # stem output stays float
    assert isinstance(bsq.get_layer("block_out"), BSQActivation)
    bsq.get_layer("block_out").weights[0].assign(0.5)  # PACT alpha
    path = os.path.join(tmp_path, "act.keras")
    bsq.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("block_out").bits == 2
    xb = np.random.RandomState(1).randn(2, 6, 6, 2).astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(xb), bsq.predict_on_batch(xb), atol=1e-5)
    np.testing.assert_allclose(to_float(bsq).predict_on_batch(xb), bsq.predict_on_batch(xb), atol=1e-5)


def test_shortcut_convs_stay_float_unless_asked():
    from quadkeras.models import build_model

    fp = build_model("resnet20", num_classes=3, input_shape=(8, 8, 3))
    shortcuts = set(shortcut_convs(fp))
    assert len(shortcuts) == 2  # the two stride-2 stage transitions
    bsq = to_bsq(fp, bits=8)
    assert shortcuts.isdisjoint(scheme_of(bsq)) and len(scheme_of(bsq)) == 20  # stem + 18 convs + fc
    assert all(type(bsq.get_layer(n)) is type(fp.get_layer(n)) for n in shortcuts)
    assert shortcuts <= set(scheme_of(to_bsq(fp, bits=8, quantize_shortcuts=True)))


def test_fc_bias_bit_quantized_regularised_and_saved(tmp_path):
    fp = _tiny_model()
    fp.get_layer("fc").bias.assign(np.array([0.3, -0.1, 0.05], "float32"))
    bsq = to_bsq(fp, bits=5, quantize_bias=True)
    fc = bsq.get_layer("fc")
    assert isinstance(fc.bias_quantizer, BitPlanes) and isinstance(bsq.get_layer("dw").bias_quantizer, BitPlanes)
    codes, scale = bitplanes.quantize_codes(np.array([0.3, -0.1, 0.05]), 5)
    np.testing.assert_allclose(fc.bias_quantizer.dequantized(), scale * codes / 31, atol=1e-6)
    x = np.random.RandomState(0).randn(2, 6, 6, 2).astype("float32")
    np.testing.assert_allclose(bsq.predict_on_batch(x), to_float(bsq).predict_on_batch(x), atol=1e-5)
    total = set_bsq_decay(bsq, 0.5)
    assert total == sum(bsq.get_layer(n).kernel_quantizer.num_params for n in ("conv", "dw", "fc")) + 4 + 4 + 3
    reg = sum(float(ops.convert_to_numpy(q.regularization())) for q in (fc.kernel_quantizer, fc.bias_quantizer))
    from quadkeras.bsq.kernel_ops import bit_group_lasso
    expected = 0.5 / total * sum(
        q.num_params * 5 * float(ops.convert_to_numpy(bit_group_lasso(
            q.part_variable("pos_planes"), q.part_variable("neg_planes"), 5.0)))
        for q in (fc.kernel_quantizer, fc.bias_quantizer))
    np.testing.assert_allclose(reg, expected, rtol=1e-5)
    report = bsq_report(bsq)
    assert report["total_params"] == total and report["layers"][-1]["bias_precision"] == 5
    back = to_representation(to_representation(bsq, "float"), "bits")
    np.testing.assert_allclose(back.predict_on_batch(x), bsq.predict_on_batch(x), atol=1e-5)
    path = os.path.join(tmp_path, "bias.keras")
    bsq.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("fc").bias_quantizer.current_precision() == 5
    np.testing.assert_allclose(loaded.predict_on_batch(x), bsq.predict_on_batch(x), atol=1e-5)


@pytest.mark.parametrize("increase", [True, False])
def test_callback_passes_precision_increase(increase):
    bsq = to_bsq(_tiny_model(), scheme={"conv": 4, "dw": 4, "fc": 4})
    fc = bsq.get_layer("fc")
    codes = np.zeros(fc.layer.kernel.shape, "int64")
    codes[0, 0], codes[0, 1] = 15, 1  # keeps MSB and LSB planes in use
    q = fc.kernel_quantizer
    q.set_codes(codes, 1.0, 4)
    pos = ops.convert_to_numpy(q.part_variable("pos_planes")).copy()
    pos[0, 0, 3] = 2.0  # 15 + 8 = 23 > 15
    q.part_variable("pos_planes").assign(pos)
    cb = BSQCallback(prun_int=1, precision_increase=increase)
    cb.set_model(bsq)
    cb.on_epoch_begin(0)
    assert cb.history[-1]["scheme"]["fc"] == (5 if increase else 4)


def test_callback_with_epochs_steps_by_epoch_number_only():
    """Engine mode (one `fit` per epoch): steps at epochs 0, 2 and after the last epoch, none at
    `on_train_end`; a resumed run (starting at epoch 2) takes the same steps from there."""
    bsq = to_bsq(_tiny_model(), bits=8)

    def run(first, cb):
        cb.set_model(bsq)
        for epoch in range(first, 4):
            cb.on_epoch_begin(epoch)
            logs = {}
            cb.on_epoch_end(epoch, logs)
            assert logs["avg_bits"] <= 8.0
            cb.on_train_end()
        return [h["epoch"] for h in cb.history]

    assert run(0, BSQCallback(prun_int=2, epochs=4)) == [0, 2, "end"]
    assert run(2, BSQCallback(prun_int=2, epochs=4)) == [2, "end"]
    assert run(3, BSQCallback(prun_int=2, epochs=4)) == ["end"]


def test_scheme_from_a_model_without_bsq_layers_is_refused():
    """--dict / scheme=<model>: a plain model's scheme is {} and gave a model of 0 BSQ layers."""
    with pytest.raises(ValueError, match=r"Invalid scheme=<model '.*'>: it holds no BSQ layers"):
        to_bsq(_tiny_model(), scheme=_tiny_model())
    assert scheme_of(to_bsq(_tiny_model(), scheme=to_bsq(_tiny_model(), bits=5))) == {"conv": 5, "dw": 5, "fc": 5}


def _act_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs))
    x = keras.layers.ReLU(name="act1")(keras.layers.Conv2D(4, 3, padding="same", name="conv1")(x))
    x = keras.layers.ReLU(name="act2")(keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x))
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling2D()(x)))


def test_fixed_activation_scales_make_outputs_independent_of_the_batch(tmp_path):
    from quadkeras.bsq import activation_scales, fix_activation_scales

    bsq = to_bsq(_act_model(), bits=6, abits=2)  # PACT clip + max-abs grid in act1 / act2
    rng = np.random.RandomState(0)
    calibration = (rng.rand(24, 6, 6, 2) * 3).astype("float32")
    images, others = calibration[:4], (rng.rand(6, 6, 6, 2) * 30).astype("float32")
    run = lambda m, x: ops.convert_to_numpy(m(x))  # noqa: E731
    mixed = np.concatenate([images, others])
    assert np.abs(run(bsq, images) - run(bsq, mixed)[:4]).max() > 1e-3  # the reference's behaviour
    fixed = fix_activation_scales(bsq, calibration)
    np.testing.assert_allclose(run(fixed, images), run(fixed, mixed)[:4], atol=1e-6)  # (float sums)
    # S is each layer's max over the calibration set: on it, as one batch, the reference agrees
    np.testing.assert_allclose(run(fixed, calibration), run(bsq, calibration), atol=1e-5)
    scales = activation_scales(fixed)
    assert activation_scales(bsq) == {"act1": None, "act2": None} and all(scales.values())
    split = activation_scales(fix_activation_scales(bsq, calibration, batch_size=5))
    np.testing.assert_allclose([split[k] for k in scales], list(scales.values()), rtol=1e-6)
    path = os.path.join(tmp_path, "fixed.keras")
    fixed.save(path)
    loaded = keras.models.load_model(path)
    assert activation_scales(loaded) == scales
    np.testing.assert_allclose(run(loaded, mixed), run(fixed, mixed), atol=1e-6)
