"""Model summaries: per-layer params, MACs, quadratic products, bits, memory and BOPs.

Example:

>>> from quadkeras.models import build_model
>>> summary = summarize(build_model("qresnet14"))
>>> summary.totals["params"] > 500_000
True
"""

from quadkeras.summary.bits import inner_layer, layer_bits, weight_memory_bytes
from quadkeras.summary.macs import count_macs, layer_macs, per_layer_macs
from quadkeras.summary.table import ModelSummary, print_summary, summarize

__all__ = ["ModelSummary", "count_macs", "inner_layer", "layer_bits", "layer_macs",
           "per_layer_macs", "print_summary", "summarize", "weight_memory_bytes"]
