"""Which layers the auto-builder probes: by config, names, regex or the seed's layer_index.

Default candidates are the config's `candidate_layer_names` present in the model (VGG
`conv*`, ResNet block convs); for a model without a config, every layer with a kernel
except the last one (the classifier). `layer_index` indexes that default list, like
QuadraLib's `config_auto_builder.yaml`.

Example:

>>> from quadkeras.models import build_model
>>> model = build_model("qresnet14")
>>> select_candidates(model, regex=r"stage3_.*conv2")
['stage3_block1_conv2', 'stage3_block2_conv2']
>>> select_candidates(model, layer_index=[0, 11])
['stage1_block1_conv1', 'stage3_block2_conv2']
"""

from quadkeras.models import candidate_layer_names
from quadkeras.models.model_config import config_of
from quadkeras.summary.bits import inner_layer
from quadkeras.utils.layer_regex import compile_layer_regex, filter_by_layer_regex, regex_problem  # noqa: F401


def default_candidates(model, config=None):
    """Candidate layer names, in model order."""
    present = {layer.name for layer in model.layers}
    if config is not None:
        return [n for n in candidate_layer_names(config) if n in present]
    with_kernel = [layer.name for layer in model.layers
                   if getattr(inner_layer(layer), "kernel", None) is not None]
    return with_kernel[:-1]


def select_candidates(model, config=None, names=None, regex=None, layer_index=None):
    """Candidate names filtered by explicit `names`, a `regex` (re.fullmatch) or `layer_index`."""
    config = config if config is not None else config_of(model)
    base = default_candidates(model, config)
    present = [layer.name for layer in model.layers]
    if names:
        missing = [n for n in names if n not in present]
        if missing:
            raise ValueError(f"Invalid layers={missing!r}: not in the model; expected names "
                             f"from {', '.join(base)}.")
        return list(names)
    chosen = base
    if layer_index is not None and len(layer_index):
        bad = [i for i in layer_index if not 0 <= int(i) < len(base)]
        if bad:
            raise ValueError(f"Invalid layer_index={bad!r}: expected integers in "
                             f"[0, {len(base) - 1}] (indices into {len(base)} candidate layers).")
        chosen = [base[int(i)] for i in layer_index]
    if regex:
        chosen = filter_by_layer_regex(chosen, regex)
    return chosen
