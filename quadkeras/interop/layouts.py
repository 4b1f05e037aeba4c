"""PyTorch state-dict layouts of the zoo's networks: QuadraLib's and bearpaw's (BSQ's).

The same CIFAR ResNet is saved under two sets of names:

| module | `quadralib` (QuadraLib; the canonical names here) | `bearpaw` (pytorch-classification, BSQ) |
|---|---|---|
| 1x1 projection shortcut | `layer{s}.{b}.shortcut.0` (conv), `.shortcut.1` (BN) | `layer{s}.{b}.downsample.0`, `.downsample.1` |
| classifier | `linear` | `fc` |
| saved as | raw, or `{"net": sd, "acc", "epoch"}` | `{"state_dict": sd, "epoch", "acc", "best_acc", "optimizer"}`, keys `module.`-prefixed (nn.DataParallel) |

Everything else (`conv1`, `bn1`, `layer{s}.{b}.conv{1,2}`, `.bn{1,2}`) is named alike. The
bearpaw layout exists for the ResNet family only (its VGG is another network). BSQ's bit-form
checkpoints use the bearpaw names too (`quadkeras.interop.bsq_checkpoint`).

`torch_layout.torch_entries` lists a model's entries under the canonical names;
`layout_key` / `canonical_key` rename one key; `detect_layout` reads the layout off a state
dict's keys; `match_layout` checks a state dict against a model's entries in every layout and
returns it under canonical names, or raises one line naming the closest layout and the first
differing keys.

Example:

>>> layout_key("layer2.0.shortcut.1.running_var", "bearpaw"), layout_key("linear.bias", "bearpaw")
('layer2.0.downsample.1.running_var', 'fc.bias')
>>> detect_layout(["conv1.weight", "layer2.0.downsample.0.weight", "fc.weight"])
'bearpaw'
>>> canonical_state({"fc.weight": 1, "conv1.weight": 2})
{'linear.weight': 1, 'conv1.weight': 2}
"""

import re

LAYOUTS = ("quadralib", "bearpaw")
DESCRIPTION = {"quadralib": "QuadraLib: shortcut.{0,1}, linear",
               "bearpaw": "bearpaw / BSQ: downsample.{0,1}, fc"}
PREFIX = "module."  # nn.DataParallel's prefix, on every key of bearpaw's and BSQ's files
COUNTER = "num_batches_tracked"
MAX_LISTED = 3

# canonical (QuadraLib) -> bearpaw, and back: (pattern, replacement) applied to the key's start
_RENAMES = {
    "bearpaw": ((re.compile(r"^(layer\d+\.\d+)\.shortcut\.([01])\."), r"\1.downsample.\2."),
                (re.compile(r"^linear\."), "fc.")),
}
_CANONICAL = {
    "bearpaw": ((re.compile(r"^(layer\d+\.\d+)\.downsample\.([01])\."), r"\1.shortcut.\2."),
                (re.compile(r"^fc\."), "linear.")),
}
# keys that only one layout has (how a state dict shows its layout)
_MARKERS = {"bearpaw": re.compile(r"^(layer\d+\.\d+\.downsample\.|fc\.)"),
            "quadralib": re.compile(r"^(layer\d+\.\d+\.shortcut\.|linear\.|features\.|classifier\.)")}


def check_layout(layout):
    """`layout` if it is one of `LAYOUTS`, else a one-line ValueError."""
    if layout not in LAYOUTS:
        raise ValueError(f"Invalid layout={layout!r}: expected one of {', '.join(LAYOUTS)}.")
    return layout


def _apply(key, rules):
    for pattern, replacement in rules:
        new, count = pattern.subn(replacement, key, count=1)
        if count:
            return new
    return key


def layout_key(key, layout):
    """The canonical (QuadraLib) `key` under `layout`'s names."""
    return _apply(key, _RENAMES.get(check_layout(layout), ()))


def canonical_key(key, layout):
    """`layout`'s `key` under the canonical (QuadraLib) names."""
    return _apply(key, _CANONICAL.get(check_layout(layout), ()))


def strip_prefix(state):
    """`state` without nn.DataParallel's `module.` key prefixes."""
    return {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in state.items()}


def detect_layout(keys):
    """`"bearpaw"` when a key only bearpaw's layout has (`layer*.downsample.*`, `fc.*`) is
    there and none only QuadraLib's has; else `"quadralib"` (`module.` prefixes ignored)."""
    keys = [k[len(PREFIX):] if k.startswith(PREFIX) else k for k in keys]
    bearpaw = any(_MARKERS["bearpaw"].match(k) for k in keys)
    quadralib = any(_MARKERS["quadralib"].match(k) for k in keys)
    return "bearpaw" if bearpaw and not quadralib else "quadralib"


def canonical_state(state, layout=None):
    """`state` ({key: value}) under canonical names (`layout` default: `detect_layout`),
    `module.` prefixes removed."""
    state = strip_prefix(state)
    layout = detect_layout(state) if layout is None else check_layout(layout)
    return {canonical_key(k, layout): v for k, v in state.items()}


def layout_state(state, layout):
    """A canonical `state` under `layout`'s names (no prefix)."""
    return {layout_key(k, layout): v for k, v in state.items()}


def layouts_for(entries):
    """The layouts a model's canonical entries can be written in (bearpaw: ResNet only)."""
    keys = [e.key for e in entries]
    resnet = any(k.startswith("layer") for k in keys) or not any(k.startswith("features.") for k in keys)
    return LAYOUTS if resnet else ("quadralib",)


def _listed(items):
    items = list(items)
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def _differences(expected, state):
    """(missing [(key, shape)], unexpected [key], mis-shaped [(key, got, want)]) of `state`
    against {key: shape} (BatchNorm counters optional)."""
    missing = [(k, s) for k, s in expected.items() if k not in state and not k.endswith(COUNTER)]
    unexpected = [k for k in state if k not in expected]
    shaped = [(k, tuple(state[k].shape), s) for k, s in expected.items()
              if k in state and not k.endswith(COUNTER) and tuple(state[k].shape) != tuple(s)]
    return missing, unexpected, shaped


def match_layout(entries, state, source="state_dict"):
    """`state` (a checkpoint's {key: array}, any known layout, `module.` allowed) under
    canonical names, after checking its keys and shapes against `entries` (canonical).

    The layout is the one whose names `state` matches best; when keys differ, a one-line
    ValueError names that closest layout and the first missing (with the expected shape) and
    unexpected keys, in that layout's names; a mis-shaped key is named with both shapes.
    """
    state = strip_prefix(state)
    canonical = {e.key: tuple(e.shape) for e in entries}
    best = None
    for layout in layouts_for(entries):
        expected = {layout_key(k, layout): s for k, s in canonical.items()}
        found = len(set(expected) & set(state))
        if best is None or found > best[1] or (found == best[1] and layout == detect_layout(state)):
            best = (layout, found, expected)
    layout, found, expected = best
    missing, unexpected, shaped = _differences(expected, state)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing keys " + _listed(f"{k} {s}" for k, s in missing))
        if unexpected:
            parts.append("unexpected keys " + _listed(unexpected))
        known = ", ".join(f"{name} ({DESCRIPTION[name]})" for name in layouts_for(entries))
        raise ValueError(f"Invalid checkpoint {source}: its keys match no known layout of the model "
                         f"({known}); closest: {layout}, {found} of {len(expected)} keys: "
                         f"{'; '.join(parts)}.")
    if shaped:
        key, got, want = shaped[0]
        more = f" (+{len(shaped) - 1} more mis-shaped keys)" if len(shaped) > 1 else ""
        raise ValueError(f"Invalid checkpoint {source}: key {key} has shape {got}, expected {want}{more}.")
    return {canonical_key(k, layout): v for k, v in state.items()}


def wrap_checkpoint(state, layout, acc=0.0, epoch=0, extra=None):
    """The dict a framework saves around a state dict in `layout`'s names.

    quadralib: `{"net": state, "acc": acc, "epoch": epoch}` (QuadraLib's `epoch`: 0-based
    index of the last finished epoch). bearpaw: `{"state_dict": {"module." + key: ...},
    "epoch": epoch, "acc": acc, "best_acc": acc, **extra}` as bearpaw's and BSQ's scripts
    save it (their `epoch`: epochs done) — `extra` holds BSQ's `Nbit_dict`. No `optimizer`
    entry: its state is not ours to write, and BSQ's `--model` / bearpaw's evaluation read
    only `state_dict` (and `Nbit_dict`); resuming SGD from such a file is not supported.
    """
    if check_layout(layout) == "quadralib":
        return {"net": state, "acc": acc, "epoch": epoch, **(extra or {})}
    return {"state_dict": {PREFIX + k: v for k, v in state.items()}, "epoch": epoch, "acc": acc,
            "best_acc": acc, **(extra or {})}


def is_bit_form(state):
    """Whether a state dict holds BSQ's bit form (`*.pweight` planes)."""
    return any(k.endswith(".pweight") for k in state)


def check_float_form(state, source="state_dict"):
    """One-line ValueError for BSQ's bit form where a float state dict is read."""
    if is_bit_form(state):
        raise ValueError(f"Invalid checkpoint {source}: it holds BSQ's bit form (pweight / nweight bit "
                         "planes), not float weights; import it as a BSQ model: apps/bsq.py --mode=convert "
                         "--from_torch=<file> (quadkeras.interop.bsq_checkpoint.import_bsq_checkpoint).")
