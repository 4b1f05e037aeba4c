"""QAT -> int8 for quadratic layers without a trained branch fake-quant: a calibrated one.

Models made with `quantize_model(model, "int8_qat")` (or `--quant=fakequant`) train a
`branch_quantizer` on the fused linear output, so the Keras QAT model already rounds where
the int8 conv rounds and nothing below is needed. This module covers the rest (`t2_4`,
models quantized with an explicit scheme without "branch"):

A quadratic layer runs one fused linear op, (per-branch BN,) split and multiply/add. In a
QAT model the wrapper fake-quantizes the layer's input, kernel and final output, but not the
fused linear output, so the converter has no int8 range for it and keeps that conv/dense in
float32. For export only, `branch_fake_quant` inserts a fake-quant (range calibrated on
representative data, per tensor) right before the branch split; the converter then folds
the inference BN into the (per-channel quantized) kernel and emits an int8 conv/dense. With
a symmetric per-channel kernel quantizer, folding a per-channel BN scale commutes with the
kernel quantization, so only the new activation rounding differs from the Keras QAT model.

Example:

>>> with branch_fake_quant(model, calibration_images) as layers:  # doctest: +SKIP
...     write_saved_model(model, "/tmp/qat_sm")
"""

import contextlib

import keras

from quadkeras.quantize.model import quantized_layers
from quadkeras.quantize.observe import MinMax, observe
from quadkeras.quantize.wrapper import QUAD_LAYERS, QuantizeWrapper
from quadkeras.quantizers.fakequant import FakeQuant


def quantized_quad_layers(model):
    """Quadratic layers (not `t1`) wrapped by a `QuantizeWrapper` with fake-quant quantizers
    and no trained `branch_quantizer` (those already carry the fake-quant in their graph)."""
    found = []
    for layer in quantized_layers(model):
        if not isinstance(layer, QuantizeWrapper) or not isinstance(layer.layer, QUAD_LAYERS):
            continue
        if layer.branch_quantizer is not None:
            continue
        quantizers = (layer.kernel_quantizer, layer.input_quantizer, layer.output_quantizer)
        if not layer.layer.neuron_spec.bilinear and any(isinstance(q, FakeQuant) for q in quantizers):
            found.append(layer.layer)
    return found


class _BranchRanges:
    """A layer's `fused_output_hook` while observing (`quadkeras.quantize.observe`): the range
    of each fused linear output (the hook's `index`), passed through unchanged."""

    def __init__(self):
        self.ranges = []

    def __call__(self, z, index):
        while len(self.ranges) <= index:
            self.ranges.append(MinMax())
        self.ranges[index].update(z)
        return z


class _BranchFakeQuant:
    """A layer's `fused_output_hook` for export: fake-quantize each fused linear output to its
    observed range (widened to hold 0, at least 1e-6 wide)."""

    def __init__(self, ranges, num_bits):
        self.ranges = [(min(r.lo, 0.0), max(r.hi, 1e-6)) for r in ranges]
        self.num_bits = num_bits

    def __call__(self, z, index):
        lo, hi = self.ranges[index]
        return keras.quantizers.fake_quant_with_min_max_vars(z, lo, hi, num_bits=self.num_bits,
                                                             narrow_range=False)


@contextlib.contextmanager
def branch_fake_quant(model, images, num_bits=8, batch_size=50):
    """Within the block, quantized quadratic layers fake-quantize their fused linear output.

    Ranges are the min/max over `images` (float NHWC, run eagerly at inference, observed
    through `quadkeras.quantize.observe.observe`). Yields the patched layers; everything is
    restored on exit.
    """
    layers = quantized_quad_layers(model)
    if layers and images is None:
        raise ValueError("Invalid representative_data=None for litert_qat: quadratic layers need "
                         "calibration images for their branch outputs (pass a dataset name).")
    seen = [(layer, _BranchRanges()) for layer in layers]
    try:
        if seen:
            observe(model, images, seen, batch_size)
        for layer, ranges in seen:
            layer.fused_output_hook = _BranchFakeQuant(ranges.ranges, num_bits)
        yield layers
    finally:
        for layer in layers:
            layer.fused_output_hook = None
