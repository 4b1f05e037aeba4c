"""Model summaries: parameters and MACs per layer."""

from quadkeras.summary.macs import count_macs, layer_macs, per_layer_macs

__all__ = ["count_macs", "layer_macs", "per_layer_macs"]
