"""Upgrade a trained first-order network to quadratic (`quadratize`), starting from the same
function, and rank which convs to upgrade first (`rank_layers`). An application-level workflow
like the auto-builder, whose probes its `masking` criterion runs (docs/quadratize.md).

Example:

>>> from quadkeras.models import build_model
>>> model = build_model("resnet20", input_shape=(8, 8, 3))
>>> quad = quadratize(model, layers=["stage3_block3_conv2"])
>>> type(quad.get_layer("stage3_block3_conv2")).__name__
'QuadConv2D'
"""

from quadkeras.quadratize.rank import CRITERIA, gradient_scores, rank_layers
from quadkeras.quadratize.upgrade import added_params, convertible_layers, quadratize, select_layers

__all__ = ["CRITERIA", "added_params", "convertible_layers", "gradient_scores", "quadratize",
           "rank_layers", "select_layers"]
