"""Reports for people: PNG plots of training curves, per-layer cost, BSQ bits and RI.

Example:

>>> import os, tempfile
>>> from quadkeras.report import plot_history
>>> plot_history({"loss": [1.0, 0.5]}, os.path.join(tempfile.mkdtemp(), "loss.png")).endswith(".png")
True
"""

from quadkeras.report.plots import (plot_accuracy_vs_params, plot_bits_per_layer, plot_history,
                                    plot_layers, plot_ri, plot_sweep, read_history, try_plot)

__all__ = ["plot_accuracy_vs_params", "plot_bits_per_layer", "plot_history", "plot_layers",
           "plot_ri", "plot_sweep", "read_history", "try_plot"]
