"""Model zoo and builders from functional configs."""

from quadkeras.models.builder import (
    build_model,
    candidate_layer_names,
    load_config,
    save_config,
    validate_config,
)
from quadkeras.models.zoo import ZOO, zoo_config

__all__ = ["ZOO", "build_model", "candidate_layer_names", "load_config", "save_config", "validate_config", "zoo_config"]
