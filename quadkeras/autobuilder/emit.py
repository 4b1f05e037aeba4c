"""Turn ranked layer scores into a new model config (first-order or removed layers).

Layers are taken in RI order (highest first) until `top_k` are chosen, or until the built
model fits a `param_budget` / `mac_budget` (a fraction of the original model's count when
<= 1, an absolute count otherwise). `action="first_order"` writes `{"type": "conv"}`
overrides; `action="remove"` removes VGG convs, and for ResNet the whole shape-keeping
block `stage{s}_block{b}` that holds the chosen conv (blocks that change the shape cannot
be removed and are skipped).

Example:

>>> from quadkeras.models import zoo_config
>>> config, chosen = emit_config(zoo_config("qvgg7"), ["conv5", "conv4"], top_k=1)
>>> chosen, config["overrides"]
(['conv5'], {'conv5': {'type': 'conv'}})
"""

import json
import re

import yaml

from quadkeras.models import build_model, save_config
from quadkeras.summary.macs import count_macs
from quadkeras.utils.validation import check_choice, check_positive_int

ACTIONS = ("first_order", "remove")
_BLOCK = re.compile(r"(stage(\d+)_block(\d+))_conv\d+")


def plain_config(config):
    """A plain dict/list copy of a config (Keras wraps dicts set as model attributes)."""
    return json.loads(json.dumps(config))


def model_cost(config):
    """(params, MACs) of the model a config builds."""
    model = build_model(config)
    return model.count_params(), count_macs(model)


def _resnet_block(config, name):
    """Block name of a ResNet conv if that block keeps the shape (removable), else None."""
    match = _BLOCK.fullmatch(name)
    if match is None:
        raise ValueError(f"Invalid layer {name!r} for action='remove': expected a ResNet "
                         "block conv named stage{s}_block{b}_conv{1,2}.")
    block, s, b = match.group(1), int(match.group(2)), int(match.group(3))
    stages = config["stages"]
    stage = stages[s - 1]
    in_filters = config.get("stem_filters", 16) if s == 1 else stages[s - 2]["filters"]
    keeps = b > 1 or (stage.get("stride", 1) == 1 and in_filters == stage["filters"])
    return block if keeps else None


def override_for(config, name, action):
    """(override key, override value) that applies `action` to layer `name`, or None."""
    check_choice("action", action, ACTIONS)
    if action == "first_order":
        return name, {"type": "conv"}
    if config["family"] == "vgg":
        return name, {"type": "remove"}
    block = _resnet_block(config, name)
    return None if block is None else (block, {"type": "remove"})


def _limit(value, original, what):
    if value is None:
        return None
    if value <= 0:
        raise ValueError(f"Invalid {what}={value!r}: expected a fraction in (0, 1] or a count > 1.")
    return value * original if value <= 1 else value


def emit_config(config, ranked_names, top_k=None, param_budget=None, mac_budget=None,
                action="first_order"):
    """A new config with the best-ranked layers changed, and the list of layers changed.

    Args:
        config: the original model config dict.
        ranked_names: candidate layer names, highest RI first.
        top_k: change this many layers (after skipping ones `action` cannot apply to).
        param_budget, mac_budget: stop once the new model's params / MACs are at most this
            (fraction of the original when <= 1, absolute otherwise).
    """
    check_choice("action", action, ACTIONS)
    if top_k is None and param_budget is None and mac_budget is None:
        raise ValueError("Invalid selection: expected one of top_k, param_budget, mac_budget.")
    if top_k is not None:
        check_positive_int("top_k", top_k)
    new = plain_config(config)
    overrides = new.setdefault("overrides", {})
    budgets = param_budget is not None or mac_budget is not None
    if budgets:
        params0, macs0 = model_cost(config)
        max_params = _limit(param_budget, params0, "param_budget")
        max_macs = _limit(mac_budget, macs0, "mac_budget")
    chosen = []
    for name in ranked_names:
        if top_k is not None and len(chosen) >= top_k:
            break
        target = override_for(new, name, action)
        if target is None or overrides.get(target[0]) == target[1]:
            continue
        overrides[target[0]] = target[1]
        chosen.append(name)
        if budgets:
            params, macs = model_cost(new)
            if (max_params is None or params <= max_params) and (max_macs is None or macs <= max_macs):
                break
    new["name"] = f"{config.get('name', config['family'])}_auto"
    return new, chosen


def write_config(config, path, header_lines=()):
    """Write a config as YAML (JSON for .json paths) with optional `#` comment header lines."""
    if str(path).endswith(".json"):
        save_config(config, path)
        return
    with open(path, "w") as f:
        for line in header_lines:
            f.write(f"# {line}\n")
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=None)
