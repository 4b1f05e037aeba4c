"""Per-variable L2 decay coefficients: `wd`, `decay_small` and `custom_decay_list`.

Rules, applied to each trainable variable (matched on `variable.path`, e.g.
`stage1_block1_conv1/kernel`; a quantizer's parameter also on its older name,
`conv1/input_alpha` for `conv1/input/alpha`, so existing patterns such as `_alpha` still match):
1. if a regex of `custom_decay_list` matches -> `custom_decay` (a training run refuses an
   entry that matches no variable: `check_decay_list`);
2. elif `decay_small` and the variable is "small" (at most 1-D: biases, BN gamma/beta,
   per-branch BN, scalar quantizer params, or a quantizer param `step`/`alpha`/`basis`/
   `levels`) -> 0;
3. else -> `wd`.

Example:

>>> import keras
>>> layer = keras.layers.Dense(2); layer.build((None, 3))
>>> decay_coefficients(layer.trainable_variables, 5e-4, decay_small=True)
[0.0005, 0.0]
>>> decay_coefficients(layer.trainable_variables, 5e-4, custom_decay_list="bias", custom_decay=0.01)
[0.0005, 0.01]
"""

import re

from quadkeras.quantizers.base import is_quantizer_parameter


def parse_decay_list(custom_decay_list):
    """A comma-separated string or a list of regexes -> list of compiled patterns."""
    if not custom_decay_list:
        return []
    items = custom_decay_list.split(",") if isinstance(custom_decay_list, str) else list(custom_decay_list)
    patterns = []
    for item in (i.strip() for i in items):
        if item:
            try:
                patterns.append(re.compile(item))
            except re.error as err:
                raise ValueError(f"Invalid custom_decay_list entry {item!r}: not a regex ({err}).") from None
    return patterns


def is_small(variable):
    """True for variables that `decay_small` exempts (<= 1-D or quantizer params)."""
    return len(variable.shape) <= 1 or is_quantizer_parameter(variable)


def decay_coefficient(variable, wd, decay_small=False, patterns=(), custom_decay=None):
    """L2 coefficient for one variable (see module rules)."""
    names = _names(variable)
    if patterns and any(p.search(n) for p in patterns for n in names):
        if custom_decay is None:
            raise ValueError("Invalid custom_decay=None: required when custom_decay_list is set.")
        return float(custom_decay)
    if decay_small and is_small(variable):
        return 0.0
    return float(wd)


def check_decay_list(variables, custom_decay_list):
    """One-line ValueError naming the `custom_decay_list` entries that match none of
    `variables` (a typo would otherwise decay nothing differently, silently)."""
    patterns = parse_decay_list(custom_decay_list)
    names = [n for v in variables for n in _names(v)]
    unmatched = [p.pattern for p in patterns if not any(p.search(n) for n in names)]
    if unmatched:
        examples = ", ".join(repr(n) for n in names[:3])
        raise ValueError(f"Invalid custom_decay_list entries {unmatched}: they match no trainable "
                         f"variable; expected regexes of variable paths (e.g. {examples}, or 'bias$').")


def _names(variable):
    """The names a pattern is matched against: the path (and a quantizer parameter's older name)."""
    name = variable.path if hasattr(variable, "path") else variable.name
    names = [name]
    if is_quantizer_parameter(variable):  # `<host>/<slot>/<param>` was `<host>/<slot>_<param>`
        names.append(re.sub(r"/([^/]+)/([^/]+)$", r"/\1_\2", name))
    return names


def decay_coefficients(variables, wd, decay_small=False, custom_decay_list=None, custom_decay=None):
    """List of L2 coefficients, one per variable."""
    if float(wd) < 0 or (custom_decay is not None and float(custom_decay) < 0):
        raise ValueError(f"Invalid wd={wd!r} / custom_decay={custom_decay!r}: expected >= 0.")
    patterns = parse_decay_list(custom_decay_list)
    return [decay_coefficient(v, wd, decay_small, patterns, custom_decay) for v in variables]
