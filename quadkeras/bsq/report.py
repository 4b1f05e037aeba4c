"""BSQ evaluation report: precision and % of 1s per bit per layer, average bits, compression.

Average bits = sum_l #params_l * n_l / sum_l #params_l over the BSQ layers; compression
rate = 32 / average bits (BSQ's `TP*32/TB`; BSQ's ResNet excludes the 1x1 shortcut convs
from these totals, we count every wrapped layer). A quadratic layer with per-branch bits is
listed once per branch kernel (`stage1_block1_conv1[a]`, `[b]`, `[c]`), each with its
parameters and precision.

Example:

>>> import keras
>>> from quadkeras.bsq.convert import to_bsq
>>> m = to_bsq(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")]), bits=4)
>>> r = bsq_report(m)
>>> r["average_bits"], r["compression_rate"]
(4.0, 8.0)
"""

import json

from quadkeras.bsq import bitplanes
from quadkeras.bsq.convert import bsq_layers, bsq_quantizers, part_key
from quadkeras.report.plots import plot_bits_per_layer


def average_bits(model):
    """Parameter-weighted mean precision of the BSQ layers (bit-quantized biases included)."""
    params = bits = 0
    for layer in bsq_layers(model):
        for q in bsq_quantizers(layer):  # the kernel (or each branch kernel) and a bit-quantized bias
            for branch in q.branches:
                params += q.part_params(branch)
                bits += q.part_params(branch) * q.current_precision(branch)
    return float(bits / params) if params else 0.0


def bsq_report(model, accuracy=None):
    """Dict with per-layer precision / % of 1s, average bits, compression (+ `accuracy`, in %,
    measured by the caller, e.g. with `quadkeras.training.trainer.test_accuracy`)."""
    layers = []
    for layer in bsq_layers(model):
        kernel, bias = layer.kernel_quantizer, layer.bias_quantizer
        for branch in kernel.branches:  # one entry per branch kernel of a per-branch quadratic layer
            codes, _, n = kernel.get_codes(branch)
            entry = {"name": part_key(layer.name, branch), "type": type(layer.layer).__name__,
                     "params": kernel.part_params(branch), "precision": n,
                     "ones_percent_msb_first": bitplanes.ones_percent(codes, n)}
            if bias is not None:  # bit-quantized bias: counted in the totals as BSQ's total_param/bit
                entry.update(bias_params=bias.num_params, bias_precision=bias.current_precision())
            layers.append(entry)
    params = sum(layer["params"] + layer.get("bias_params", 0) for layer in layers)
    bits = sum(layer["params"] * layer["precision"] + layer.get("bias_params", 0) * layer.get("bias_precision", 0)
               for layer in layers)
    average = bits / params if params else 0.0
    report = {"layers": layers, "total_params": params, "total_bits": bits,
              "average_bits": float(average), "compression_rate": float(32.0 / average) if average else 0.0}
    if accuracy is not None:
        report["accuracy"] = float(accuracy)
    return report


def format_report(report):
    """Human-readable text of a report (BSQ's evaluation printout)."""
    lines = []
    if "accuracy" in report:
        lines.append(f"Accuracy: {report['accuracy']:.2f}%")
    for layer in report["layers"]:
        ones = ", ".join(f"{p:6.2f}%" for p in layer["ones_percent_msb_first"])
        lines.append(f"{layer['name']:<28} {layer['precision']:2d} bits  1s per bit (MSB..LSB): {ones}")
    lines.append(f"Average bits: {report['average_bits']:.3f}  "
                 f"Compression rate vs 32-bit: {report['compression_rate']:.2f}x "
                 f"[{report['total_params'] * 32} / {report['total_bits']}]")
    return "\n".join(lines)


def save_report(report, json_path=None, png_path=None):
    """Write the report as JSON and/or a bar plot of bits per layer (PNG)."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    if png_path:
        plot_bits_per_layer(report, png_path)
