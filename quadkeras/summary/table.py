"""Per-layer model summary: type, neuron, output shape, params, MACs, bits, memory, BOPs.

Larq's `lq.models.summary` reports params, bits and memory; this one adds MACs, the
quadratic products inside them, and BOPs (bit operations = MACs x weight bits x activation
bits; float layers count 32 x 32). Totals equal `model.count_params()` and `count_macs(model)`.

Example:

>>> from quadkeras.models import build_model
>>> model = build_model({"family": "vgg", "cfg": [4, "M"], "input_shape": [8, 8, 1],
...                      "num_classes": 2, "conv": {"type": "quad"}})
>>> s = summarize(model)
>>> s.totals["params"] == model.count_params()
True
>>> s.rows[0]["type"], s.rows[0]["neuron"]
('QuadConv2D', 'ours')
"""

import json
from dataclasses import dataclass, field

import numpy as np
import keras

from quadkeras.summary.bits import inner_layer, layer_bits, weight_memory_bytes
from quadkeras.summary.macs import per_layer_macs

COLUMNS = [  # (key, header)
    ("name", "Layer"), ("type", "Type"), ("neuron", "Neuron"), ("output_shape", "Output shape"),
    ("params_trainable", "Train params"), ("params_non_trainable", "Non-train"),
    ("macs", "MACs"), ("quad_products", "Quad prods"), ("weight_bits", "W bits"),
    ("activation_bits", "A bits"), ("memory_bytes", "Memory (B)"), ("bops", "BOPs"),
]
SUMMED = ("params", "params_trainable", "params_non_trainable", "macs", "quad_products",
          "memory_bytes", "bops")


def _count(variables):
    return int(sum(int(np.prod(v.shape)) for v in variables))


def _type_name(layer):
    inner = inner_layer(layer)
    if inner is layer:
        return type(layer).__name__
    return f"{type(layer).__name__}({type(inner).__name__})"


def _output_shape(layer):
    output = layer.output
    shape = output[0].shape if isinstance(output, (list, tuple)) else output.shape
    return [None if d is None else int(d) for d in shape[1:]]


def layer_row(layer, macs, linear_macs):
    """One summary row (a dict) for a built layer of a functional model."""
    weight_bits, activation_bits = layer_bits(layer)
    trainable = _count(layer.trainable_weights)
    non_trainable = _count(layer.non_trainable_weights)
    has_kernel = getattr(inner_layer(layer), "kernel", None) is not None
    return {
        "name": layer.name,
        "type": _type_name(layer),
        "neuron": getattr(inner_layer(layer), "neuron", None),
        "output_shape": _output_shape(layer),
        "params": trainable + non_trainable,
        "params_trainable": trainable,
        "params_non_trainable": non_trainable,
        "macs": int(macs),
        "quad_products": int(macs - linear_macs),
        "weight_bits": weight_bits if has_kernel else None,
        "activation_bits": activation_bits if has_kernel else None,
        "memory_bytes": weight_memory_bytes(layer, weight_bits),
        "bops": int(macs) * weight_bits * activation_bits,
    }


@dataclass
class ModelSummary:
    """Rows (one dict per layer, see `COLUMNS`) and their totals."""

    name: str
    rows: list
    totals: dict = field(default_factory=dict)

    def to_dict(self):
        return {"name": self.name, "rows": self.rows, "totals": self.totals}

    def to_json(self, path=None):
        """The summary as a JSON string; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def format(self):
        """A plain-text table with a totals line."""
        cells = [[h for _, h in COLUMNS]]
        for row in self.rows:
            cells.append([_cell(row[key]) for key, _ in COLUMNS])
        totals = {**{k: "" for k, _ in COLUMNS}, **{k: _cell(v) for k, v in self.totals.items()}}
        totals["name"] = "Total"
        cells.append([totals[key] for key, _ in COLUMNS])
        widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
        line = "-" * (sum(widths) + 2 * (len(widths) - 1))
        text = [f"Model: {self.name}", line]
        for i, r in enumerate(cells):
            if i in (1, len(cells) - 1):
                text.append(line)
            text.append("  ".join(c.ljust(w) if j < 4 else c.rjust(w)
                                  for j, (c, w) in enumerate(zip(r, widths))))
        text.append(line)
        t = self.totals
        text.append(f"Params: {t['params']:,} (trainable {t['params_trainable']:,}); "
                    f"MACs: {t['macs']:,} (quadratic products {t['quad_products']:,}); "
                    f"weight memory: {t['memory_bytes'] / 1024:.1f} KiB; BOPs: {t['bops']:,}")
        return "\n".join(text)


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, list):
        return "(" + ", ".join("None" if d is None else str(d) for d in value) + ")"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summarize(model):
    """A `ModelSummary` of a built functional (or Sequential) Keras model."""
    macs = per_layer_macs(model)
    linear = per_layer_macs(model, include_products=False)
    rows = [layer_row(layer, macs[layer.name], linear[layer.name]) for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)]
    totals = {key: int(sum(row[key] for row in rows)) for key in SUMMED}
    return ModelSummary(model.name, rows, totals)


def print_summary(model, print_fn=print):
    """Print the per-layer table of `model` (Larq-style `summary`, plus MACs and BOPs)."""
    summary = summarize(model)
    print_fn(summary.format())
    return summary
