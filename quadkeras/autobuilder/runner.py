"""The auto-builder end to end: probe candidates, rank by RI, emit a new config.

Example (a tiny untrained VGG; real use passes a trained model and held-out data):

>>> import numpy as np
>>> from quadkeras.models import build_model
>>> config = {"family": "vgg", "cfg": [4, "M", 4], "input_shape": [8, 8, 1],
...           "num_classes": 3, "conv": {"type": "quad"}}
>>> model = build_model(config)
>>> x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype("float32")
>>> result = auto_build(model, x, np.zeros(32, "int32"), top_k=1)
>>> len(result.scores), len(result.chosen), result.config["name"]
(2, 1, 'vgg_auto')
"""

from dataclasses import dataclass

from quadkeras.autobuilder.candidates import select_candidates
from quadkeras.autobuilder.emit import emit_config, plain_config
from quadkeras.autobuilder.scores import format_scores, probe_layers
from quadkeras.models.model_config import config_of


@dataclass
class AutoBuildResult:
    """Baseline accuracy, ranked `LayerScore`s, the emitted config and the changed layers."""

    baseline: float
    scores: list
    config: dict
    chosen: list

    def table(self):
        return format_scores(self.baseline, self.scores)


def auto_build(model, x, y, config=None, layers=None, layer_regex=None, layer_index=None,
               masking_ratio=0.5, seed=0, epsilon=1e-3, top_k=None, param_budget=None,
               mac_budget=None, action="first_order", batch_size=256):
    """Run the auto-builder on a trained model (see `probe_layers` and `emit_config`).

    `config` defaults to the model's own (`model_config.config_of`); without a config only the ranking is
    produced (`result.config` is None). With no `top_k` or budget, `top_k=1`.
    """
    config = config if config is not None else config_of(model)
    config = plain_config(config) if config is not None else None
    candidates = select_candidates(model, config, layers, layer_regex, layer_index)
    baseline, scores = probe_layers(model, x, y, candidates, masking_ratio, seed, epsilon,
                                    batch_size)
    new_config, chosen = None, []
    if config is not None:
        if top_k is None and param_budget is None and mac_budget is None:
            top_k = 1
        new_config, chosen = emit_config(config, [s.name for s in scores], top_k, param_budget,
                                         mac_budget, action)
    return AutoBuildResult(baseline, scores, new_config, chosen)
