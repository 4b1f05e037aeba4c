"""Quantization schemes: presets, `scheme_from_flags`, and per-layer rule resolution.

A scheme is a plain dict (stored under a model config's `"quantize"` key):

    {
      "kernel": "lsq:4",          # default kernel quantizer (None: keep float)
      "input": "lsq:4",           # default input (activation) quantizer
      "output": None,             # default output quantizer
      "branch": None,             # quadratic layers: fused linear output (int8 QAT export)
      "product": None,            # quadratic layers: branch product (int8 MUL/ADD at export)
      "bias": None,               # first-order layers with a bias: bias quantizer
      "quantize_first_last": False,   # False: first and last quantizable layers stay float
      "quantize_shortcut": False,     # False: "real shortcut" (shortcut convs stay float)
      "output_after_bn": False,       # True: a conv/dense output quantizer goes after the BN
                                      # that follows it (the converter folds that BN: int8 QAT)
      "shortcut_pattern": "shortcut", # regex naming shortcut layers
      "rules": [                      # applied in order, later rules win
        {"name": "logits", "kernel": "lsq:8", "input": "lsq:8"},
        {"type": "dense", "skip": True},
      ],
    }

A rule matches by `name` (regex, `re.search`) and/or `type` (`conv`, `depthwise`, `dense`,
`quad`, or a class name); it may set `kernel`, `input`, `output` and `skip` (True keeps the
layer float, False forces quantization even for first/last/shortcut layers).
Presets (strings): `"int8_qat"` (TFLite-compatible fake-quant on the input, kernel and output
of every conv/dense/quad layer and on quadratic layers' fused output and branch product,
first/last/shortcut included: every conv/dense, MUL and ADD of the export runs in int8) and `"int8_qat_fold_bn"` (the same with `output_after_bn`).

Example:

>>> scheme_from_flags("lsq", 4, 4)["kernel"]
'lsq:4'
>>> resolve_scheme("int8_qat")["output"]
'fakequant:8'
"""

import copy
import re

import keras

from quadkeras.layers import QUAD_LAYERS, QuadConv2D, QuadDense, QuadDepthwiseConv2D
from quadkeras.quantize.wrapper import QuantizeWrapper
from quadkeras.quantizers import get
from quadkeras.utils.validation import check_choice

SLOTS = QuantizeWrapper.slot_names()  # the wrapper's slot table: kernel, input, output, branch, product, bias
SCHEME_KEYS = SLOTS + ("quantize_first_last", "quantize_shortcut", "shortcut_pattern", "rules", "method",
                       "output_after_bn")
RULE_KEYS = ("name", "type", "skip") + SLOTS
LAYER_TYPES = {
    "conv": (keras.layers.Conv2D, QuadConv2D),
    "depthwise": (keras.layers.DepthwiseConv2D, QuadDepthwiseConv2D),
    "dense": (keras.layers.Dense, QuadDense),
    "quad": QUAD_LAYERS,
}
# A rule's `type` may also name one class (a config holds strings): matched with isinstance,
# so quadkeras.layers.Conv2D counts as the keras.layers.Conv2D it extends.
LAYER_CLASSES = {cls.__name__: cls for group in LAYER_TYPES.values() for cls in group}
# method -> (kernel quantizer, activation quantizer) names
METHODS = {
    "fakequant": ("fakequant", "fakequant"),
    "lsq": ("lsq", "lsq"),
    "lsq_mq": ("lsq_mq", "lsq_mq"),  # model-quantization's LSQ variant (the seed table's LSQ rows)
    "dorefa": ("dorefa", "dorefa"),
    "pact": ("dorefa", "pact"),
    "lqnet": ("lqnet", "lqnet"),
    "xnor": ("xnor", "xnor"),
    "ternary": ("ternary", None),
    "nonuniform": ("nonuniform", "nonuniform"),
}
FULL_PRECISION = (None, 0, 32)
PRESETS = {
    "int8_qat": {"method": "fakequant", "kernel": "fakequant:8", "input": "fakequant:8",
                 "output": "fakequant:8", "branch": "fakequant:8", "product": "fakequant:8",
                 "quantize_first_last": True,
                 "quantize_shortcut": True},
}
# int8_qat with each conv/dense output fake-quant after its BN: the converter folds the BN
# (smaller, faster file) at a measured cost in Keras-vs-LiteRT agreement (docs/export.md).
PRESETS["int8_qat_fold_bn"] = {**PRESETS["int8_qat"], "output_after_bn": True}
DEFAULTS = {"kernel": None, "input": None, "output": None, "branch": None, "product": None, "bias": None,
            "output_after_bn": False,
            "quantize_first_last": False,
            "quantize_shortcut": False, "shortcut_pattern": "shortcut", "rules": []}


def scheme_from_flags(method, weight_bits, activation_bits, quantize_first_last=False,
                      quantize_shortcut=False):
    """Scheme dict for the training app's `--quant/--wbits/--abits/...` flags.

    `weight_bits` / `activation_bits` of None, 0 or 32 leave that part in float.
    `fakequant` also puts an output fake-quant on every layer and on the fused linear output
    of quadratic layers (the int8 export recipe: the converter then emits int8 kernels).
    """
    method = check_choice("quant method", str(method).lower(), tuple(METHODS))
    kernel_name, act_name = METHODS[method]
    scheme = {"method": method, "kernel": None, "input": None, "output": None, "branch": None,
              "product": None,
              "quantize_first_last": bool(quantize_first_last),
              "quantize_shortcut": bool(quantize_shortcut)}
    if weight_bits not in FULL_PRECISION:
        scheme["kernel"] = f"{kernel_name}:{int(weight_bits)}"
    if activation_bits not in FULL_PRECISION:
        if act_name is None:
            raise ValueError(f"Invalid activation_bits={activation_bits!r} for method {method!r}: "
                             "expected one of None, 0, 32 (weight-only method).")
        scheme["input"] = f"{act_name}:{int(activation_bits)}"
        if method == "fakequant":
            scheme["output"] = scheme["branch"] = scheme["product"] = scheme["input"]
    for key in ("kernel", "input"):  # validate bit widths now, with a one-line error
        get(scheme[key])
    return scheme


def resolve_scheme(scheme):
    """A complete scheme dict from a preset name, a flags-style dict or a partial dict."""
    if isinstance(scheme, str):
        check_choice("scheme", scheme, tuple(PRESETS))
        scheme = PRESETS[scheme]
    if not isinstance(scheme, dict):
        raise ValueError(f"Invalid scheme {scheme!r}: expected a dict or one of {', '.join(PRESETS)}.")
    for key in scheme:
        check_choice("scheme key", key, SCHEME_KEYS)
    resolved = {**copy.deepcopy(DEFAULTS), **copy.deepcopy(scheme)}
    for rule in resolved["rules"]:
        if not isinstance(rule, dict):
            raise ValueError(f"Invalid rule {rule!r}: expected a dict with keys among {', '.join(RULE_KEYS)}.")
        for key in rule:
            check_choice("rule key", key, RULE_KEYS)
        if "type" in rule:
            _check_type(rule["type"])
    return resolved


def _check_type(kind):
    return check_choice("rule type", kind, tuple(LAYER_TYPES) + tuple(sorted(LAYER_CLASSES)))


def _type_matches(layer, kind):
    return isinstance(layer, LAYER_TYPES[kind] if kind in LAYER_TYPES else LAYER_CLASSES[kind])


def rule_matches(rule, layer):
    if "name" in rule and not re.search(rule["name"], layer.name):
        return False
    return "type" not in rule or _type_matches(layer, rule["type"])


def plan_layer(scheme, layer, is_first_or_last):
    """{"kernel", "input", "output", "branch"} quantizer specs for `layer`, or None (float).

    "branch" is kept only for quadratic layers with one fused linear op (`Neuron.branch_quantizable`).
    """
    settings = {k: scheme[k] for k in SLOTS}
    skip = (is_first_or_last and not scheme["quantize_first_last"]) or (
        not scheme["quantize_shortcut"] and re.search(scheme["shortcut_pattern"], layer.name))
    for rule in scheme["rules"]:
        if rule_matches(rule, layer):
            settings.update({k: rule[k] for k in SLOTS if k in rule})
            if "skip" in rule:
                skip = bool(rule["skip"])
    if not (isinstance(layer, LAYER_TYPES["quad"]) and layer.neuron_spec.branch_quantizable):
        settings["branch"] = None
    if not (isinstance(layer, LAYER_TYPES["quad"]) and layer.neuron_spec.product_quantizable):
        settings["product"] = None
    if isinstance(layer, LAYER_TYPES["quad"]) or not getattr(layer, "use_bias", False):
        settings["bias"] = None
    if skip or all(v is None for v in settings.values()):
        return None
    return settings
