"""QuadraLib's auto-builder, automated: rank layers by RI = P_M·P_W/δA and emit a config.

Example:

>>> from quadkeras.models import build_model
>>> model = build_model("qresnet14")
>>> select_candidates(model)[:2]
['stage1_block1_conv1', 'stage1_block1_conv2']
"""

from quadkeras.autobuilder.candidates import select_candidates
from quadkeras.autobuilder.data import heldout, heldout_options
from quadkeras.autobuilder.emit import emit_config, model_cost, write_config
from quadkeras.autobuilder.runner import AutoBuildResult, auto_build
from quadkeras.autobuilder.scores import LayerScore, probe_layers, write_csv
from quadkeras.autobuilder.source import load_model_and_config, training_config

# The steps a user runs (docs/autobuilder.md); the pieces (masking, shares, preprocessing)
# stay importable from their modules.
__all__ = ["AutoBuildResult", "LayerScore", "auto_build", "emit_config", "heldout",
           "heldout_options", "load_model_and_config", "model_cost", "probe_layers",
           "select_candidates", "training_config", "write_config", "write_csv"]
