"""Build Keras models from functional configs (dicts, YAML/JSON files or zoo names).

Example:

>>> model = build_model("qresnet14", num_classes=100)
>>> model.output_shape
(None, 100)
"""

import copy
import json
import os

import yaml

from quadkeras.models.blocks import conv_style
from quadkeras.models.resnet import build_resnet, resnet_layer_names
from quadkeras.models.vgg import build_vgg, vgg_layer_names
from quadkeras.models.zoo import zoo_config
from quadkeras.quantize.model import quantize_model
from quadkeras.utils.attached_config import attach
from quadkeras.utils.validation import check_choice, check_positive_int

FAMILIES = {"vgg": build_vgg, "resnet": build_resnet}
REQUIRED = {"vgg": ("cfg",), "resnet": ("stages",)}


def load_config(source):
    """Config dict from a zoo name, a .yaml/.yml/.json path, or a dict (copied)."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    source = str(source)
    if source.endswith((".yaml", ".yml", ".json")):
        if not os.path.exists(source):
            raise ValueError(f"Invalid model config path {source!r}: file not found.")
        with open(source) as f:
            config = json.load(f) if source.endswith(".json") else yaml.safe_load(f)
        if not isinstance(config, dict):
            raise ValueError(f"Invalid model config {source!r}: expected a mapping at top level.")
        return config
    return zoo_config(source)


def save_config(config, path):
    """Write a config as YAML (or JSON if `path` ends with .json)."""
    with open(path, "w") as f:
        if str(path).endswith(".json"):
            json.dump(config, f, indent=2)
        else:
            yaml.safe_dump(config, f, sort_keys=False, default_flow_style=None)


def validate_config(config):
    family = check_choice("family", config.get("family"), tuple(FAMILIES))
    for key in REQUIRED[family] + ("input_shape", "num_classes"):
        if key not in config:
            raise ValueError(f"Invalid model config: missing key {key!r} for family={family!r}.")
    check_positive_int("num_classes", config["num_classes"])
    conv_style(config)
    shape = config["input_shape"]
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"Invalid input_shape={shape!r}: expected [height, width, channels].")
    known = set(candidate_layer_names(config)) | {"stem_conv"}
    for name in config.get("overrides", {}):
        base = name[: -len("_shortcut")] if name.endswith("_shortcut") else name
        if name not in known and not any(n.startswith(base + "_") for n in known):
            raise ValueError(f"Invalid override {name!r}: no such layer; expected one of "
                             f"{', '.join(sorted(known))} (or a block / shortcut name).")
    return config


def candidate_layer_names(config):
    """Names of the layers a config lets you make quadratic / first-order / remove."""
    config = load_config(config)
    return vgg_layer_names(config) if config["family"] == "vgg" else resnet_layer_names(config)


def build_model(source, num_classes=None, input_shape=None, **overrides):
    """Build a Keras model from a zoo name, a config file path or a config dict.

    Args:
        source: `"qresnet14"`, `"configs/models/qvgg7.yaml"` or a dict.
        num_classes, input_shape: replace the config's values when given.
        **overrides: other top-level config keys to replace (e.g. `normalize=...`).
    """
    config = load_config(source)
    if num_classes is not None:
        config["num_classes"] = num_classes
    if input_shape is not None:
        config["input_shape"] = list(input_shape)
    config.update(overrides)
    validate_config(config)
    model = FAMILIES[config["family"]](config)
    scheme = config.get("quantize")
    if scheme:
        model = quantize_model(model, scheme)
    return attach(model, config)
