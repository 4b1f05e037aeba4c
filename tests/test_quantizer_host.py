"""QuantizerHost: one slot table, one way to find hosts, one kernel type, explicit save spec;
and the shared observer path (quantize/observe.py)."""

import numpy as np
import keras
import pytest

from quadkeras.bsq import bsq_layer
from quadkeras.quantize import QuantizeOutput, QuantizeWrapper, quantized_layers
from quadkeras.quantize import scheme
from quadkeras.layers import QuadDense
from quadkeras.quantize import initialize_quantizers
from quadkeras.quantize.observe import MinMax, observe, set_parameters
from quadkeras.quantizers.hosting import QuantizerHost


def _model(host, shape=(3,)):
    inp = keras.Input(shape)
    return keras.Model(inp, host(inp))


def test_every_host_is_found_and_returns_its_kernel_in_numpy():
    hosts = [QuantizeWrapper(keras.layers.Dense(2, name="q"), kernel_quantizer="lsq:4"),
             bsq_layer(keras.layers.Dense(2, name="b"), bits=4),
             QuantizeOutput(keras.layers.Dense(2, name="o"), output_quantizer="fakequant:8")]
    for host in hosts:
        assert isinstance(host, QuantizerHost)
        assert quantized_layers(_model(host)) == [host]
    for host in hosts[:2]:
        assert isinstance(host.quantized_kernel(), np.ndarray)
    assert [q.method for q in hosts[1].quantizers()] == ["bsq"]  # BSQ's planes: a kernel-slot quantizer
    assert hosts[1].quantization_bits() == {"weight": 4, "activation": None}
    assert hosts[2].quantization_bits() == {"weight": None, "activation": None}  # as before


def test_schemes_read_the_wrappers_slot_table():
    assert scheme.SLOTS == QuantizeWrapper.slot_names() == ("kernel", "input", "output", "branch", "product", "bias")
    assert QuantizeWrapper.variable_order() == ("input", "kernel", "output", "branch", "product", "bias")


def test_quantizers_are_tracked_before_the_wrapped_layer():
    w = QuantizeWrapper(keras.layers.Dense(2), "lsq:4", "lsq:4")  # positional: SLOTS' order
    w.build((None, 3))
    assert [v.path.split("/", 1)[1] for v in w.trainable_variables] == [
        "input/step", "kernel/step", "dense/kernel", "dense/bias"]


def test_slot_arguments_refuse_too_many_or_twice():
    with pytest.raises(TypeError, match="at most 1 quantizers"):
        QuantizeOutput(keras.layers.Dense(2), "fakequant:8", "fakequant:8")
    with pytest.raises(TypeError, match="multiple values for argument 'kernel_quantizer'"):
        QuantizeWrapper(keras.layers.Dense(2), "lsq:4", kernel_quantizer="lsq:4")
    with pytest.raises(ValueError, match="Invalid output_quantizer=None for QuantizeOutput"):
        QuantizeOutput(keras.layers.Dense(2), None)


def test_bsq_planes_are_the_kernel_and_bias_quantizers_variables(tmp_path):
    layer = bsq_layer(keras.layers.Dense(3, name="fc"), bits=4, quantize_bias=True, name="fc")
    model = _model(layer)
    assert layer.variable_spec() == [] and [v.path for v in layer.weights] == [
        "fc/kernel/pos_planes", "fc/kernel/neg_planes", "fc/kernel/scale", "fc/kernel/precision",
        "fc/kernel/reg_strength", "fc/bias/pos_planes", "fc/bias/neg_planes", "fc/bias/scale",
        "fc/bias/precision", "fc/bias/reg_strength", "fc/fc/kernel", "fc/fc/bias"]
    assert not layer.layer.kernel.trainable and not layer.layer.bias.trainable  # the planes hold them
    layer.kernel_quantizer.set_value(np.linspace(-1, 1, 9).reshape(3, 3), 3)
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    other = bsq_layer(keras.layers.Dense(3, name="fc"), bits=4, quantize_bias=True, name="fc")
    _model(other).load_weights(path)
    np.testing.assert_array_equal(other.quantized_kernel(), layer.quantized_kernel())
    assert other.kernel_quantizer.current_precision() == 3


def test_observe_removes_the_observers_after_an_error():
    w = QuantizeWrapper(keras.layers.Dense(2), input_quantizer="fakequant:8")
    model = _model(w, (4,))

    def fail(q, x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        observe(model, np.ones((2, 4), "float32"), [(w.input_quantizer, fail)])
    assert w.input_quantizer.observer is None
    set_parameters(w.input_quantizer, min=-2.0, max=2.0)
    assert not w.input_quantizer.awaiting_data_init
    assert float(keras.ops.convert_to_numpy(w.input_quantizer.max_var)) == 2.0


def test_export_branch_ranges_are_observed_then_applied_and_removed():
    from quadkeras.export.quad_qat import branch_fake_quant  # loads the export package

    inner = QuadDense(3, name="q")
    model = _model(QuantizeWrapper(inner, kernel_quantizer="fakequant:8", input_quantizer="fakequant:8"), (4,))
    x = np.random.default_rng(0).standard_normal((16, 4)).astype("float32")
    initialize_quantizers(model, x)
    seen = {}

    def record(z, index):
        seen.setdefault(index, MinMax()).update(z)
        return z

    observe(model, x, [(inner, record)], batch_size=5)  # a quadratic layer's tap: fused_output_hook
    assert inner.fused_output_hook is None and seen
    plain = keras.ops.convert_to_numpy(model(x, training=False))
    with branch_fake_quant(model, x, batch_size=5) as layers:
        assert layers == [inner]
        assert inner.fused_output_hook.ranges == [(min(r.lo, 0.0), max(r.hi, 1e-6)) for _, r in sorted(seen.items())]
        quantized = keras.ops.convert_to_numpy(model(x, training=False))
    assert inner.fused_output_hook is None and not np.allclose(quantized, plain)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), plain)
