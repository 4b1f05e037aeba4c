"""QuadraLib's auto-builder, automated: rank layers by RI = P_M·P_W/δA and emit a config.

Example:

>>> from quadkeras.models import build_model
>>> model = build_model("qresnet14")
>>> select_candidates(model)[:2]
['stage1_block1_conv1', 'stage1_block1_conv2']
"""

from quadkeras.autobuilder.candidates import default_candidates, select_candidates
from quadkeras.autobuilder.data import (heldout, heldout_options, load_arrays, preprocess,
                                        split_validation)
from quadkeras.autobuilder.emit import emit_config, model_cost, override_for, write_config
from quadkeras.autobuilder.masking import mask_for, maskable_variables, masked
from quadkeras.autobuilder.runner import AutoBuildResult, auto_build
from quadkeras.autobuilder.scores import (LayerScore, accuracy, format_scores, mac_shares,
                                          param_shares, probe_layers, write_csv)
from quadkeras.autobuilder.source import load_model_and_config, model_path, training_config

__all__ = ["AutoBuildResult", "LayerScore", "accuracy", "auto_build", "default_candidates",
           "emit_config", "format_scores", "heldout", "heldout_options", "load_arrays",
           "load_model_and_config", "mac_shares", "mask_for", "maskable_variables", "masked",
           "model_cost", "model_path", "override_for", "param_shares", "preprocess",
           "probe_layers", "select_candidates", "split_validation", "training_config",
           "write_config", "write_csv"]
