"""Quantizer lookup: objects, string specs and config dicts (a small safe parser, no eval).

String grammar: ``name[:bits][:option]...`` where each option is one of

- ``signed`` / ``unsigned``
- ``per_tensor`` / ``per_channel`` / ``groups=G`` (or ``gG``, e.g. ``g4``)
- ``var_mean`` (var-mean weight normalisation)
- ``weight`` / ``activation`` (role; normally set by the wrapper)
- ``key=value`` for a method argument (int, float, true/false or a bare word),
  e.g. ``pact:4:alpha_init=6`` or ``lqnet:2:basis_update=gradient``.

Names (aliases in parentheses): fakequant (uniform), lsq, lsq_mq (model-quantization's LSQ
variant), dorefa, pact, lqnet, xnor (binary), ternary (twn), nonuniform.

Example:

>>> q = get("lsq:4:per_channel")
>>> type(q).__name__, q.bits, q.granularity
('LSQ', 4, 'per_channel')
>>> get({"class_name": "PACT", "config": {"bits": 2}}).bits
2
"""

import inspect
import re

import keras

from quadkeras.quantizers.base import REGISTRY, Quantizer
from quadkeras.utils.validation import check_choice

# Every method registers itself (`@register`) where it is defined; quadkeras.quantizers
# imports them all, so `get` sees them. A new method needs no edit here.
QUANTIZERS = REGISTRY
ALIASES = {"uniform": "fakequant", "binary": "xnor", "twn": "ternary"}
CLASS_NAMES = {cls.__name__: cls for cls in QUANTIZERS.values()}
FLAGS = {
    "signed": ("signed", True), "unsigned": ("signed", False),
    "per_tensor": ("granularity", "per_tensor"), "per_channel": ("granularity", "per_channel"),
    "var_mean": ("normalize", "var_mean"),
    "weight": ("role", "weight"), "activation": ("role", "activation"),
}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INTEGER = re.compile(r"^[+-]?\d+$")


def quantizer_class(name):
    """The class for a registered name or alias (one-line error listing the choices)."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    check_choice("quantizer", key, tuple(QUANTIZERS) + tuple(ALIASES))
    return QUANTIZERS[key]


def _value(text, spec):
    if _NUMBER.match(text):
        return float(text) if any(c in text for c in ".eE") else int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    if _WORD.match(text):
        return text
    raise ValueError(f"Invalid value {text!r} in quantizer spec {spec!r}: expected a number, "
                     "true/false, none or a bare word.")


def parse_spec(spec):
    """`"lsq:4:per_channel"` -> `(LSQ, {"bits": 4, "granularity": "per_channel"})`.

    Two options that set the same argument to different values (`per_channel:per_tensor`,
    `lsq:4:bits=8`, `signed:unsigned`, `per_channel:g4`) are refused naming both; a repeat
    with the same value is harmless. Bits and numeric options are range-checked by the
    quantizer itself (`quadkeras.quantizers.options.check_bits`, `Quantizer.number`).
    """
    parts = [p.strip() for p in str(spec).split(":")]
    cls = quantizer_class(parts[0])
    kwargs, given_by = {}, {}
    for i, part in enumerate(parts[1:]):
        for key, value in _option(cls, part, i == 0, spec).items():
            if key in kwargs and not _same(kwargs[key], value):
                raise ValueError(
                    f"Invalid quantizer spec {spec!r}: options {given_by[key]!r} and {part!r} "
                    f"contradict (both set {key}); expected one of them.")
            kwargs[key], given_by[key] = value, part
    return cls, kwargs


def _same(a, b):
    """Equal values of one kind (True is not the number 1 here; 4 and 4.0 are the same)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _option(cls, part, first, spec):
    """The keyword arguments one spec option sets."""
    if first and _INTEGER.match(part):  # bits; out-of-range widths are refused by the class
        return {"bits": int(part)}
    if part in FLAGS:
        key, value = FLAGS[part]
        return {key: value}
    if re.match(r"^g\d+$", part):
        return {"granularity": "groups", "groups": int(part[1:])}
    if "=" in part:
        key, text = part.split("=", 1)
        return _keyword(cls, key.strip(), _value(text.strip(), spec), spec)
    raise ValueError(
        f"Invalid option {part!r} in quantizer spec {spec!r}: expected bits, one of "
        f"{', '.join(FLAGS)}, gN / groups=N or key=value.")


def _keyword(cls, key, value, spec):
    if key == "groups":
        return {"granularity": "groups", "groups": value}
    allowed = _arguments(cls)
    check_choice(f"argument (quantizer spec {spec!r})", key, allowed)
    return {key: value}


LAYER_ARGUMENTS = ("name", "dtype", "trainable")  # Keras layer arguments a saved config holds


def _arguments(cls):
    names = list(LAYER_ARGUMENTS)
    for klass in (cls, Quantizer):
        names += [p for p in inspect.signature(klass.__init__).parameters
                  if p not in ("self", "kwargs") and p not in names]
    return tuple(names)


def get(spec):
    """A new-or-given `Quantizer` from an object, string spec, or dict (None passes through).

    Dicts: `{"class_name": "LSQ", "config": {...}}` (Keras style) or
    `{"name": "lsq", "bits": 4, ...}` (flat).
    """
    if spec is None or isinstance(spec, Quantizer):
        return spec
    if isinstance(spec, str):
        cls, kwargs = parse_spec(spec)
        return cls(**kwargs)
    if isinstance(spec, dict):
        if "class_name" in spec:
            name = spec["class_name"]
            cls = CLASS_NAMES.get(name) or quantizer_class(name)
            return _from_config(cls, dict(spec.get("config", {})))
        if "name" in spec:
            config = {k: v for k, v in spec.items() if k != "name"}
            return _from_config(quantizer_class(spec["name"]), config)
    raise ValueError(f"Invalid quantizer {spec!r}: expected a Quantizer, a string like 'lsq:4', "
                     "or a dict with 'class_name' or 'name'.")


def _from_config(cls, config):
    allowed = _arguments(cls)
    for key in config:
        check_choice(f"argument of quantizer {cls.method!r}", key, allowed)
    try:
        return cls.from_config(config)
    except TypeError as err:  # Keras wraps the constructor's one-line ValueError in a long TypeError
        if isinstance(err.__context__, ValueError):
            raise err.__context__ from None
        raise


def serialize(quantizer):
    """Keras-style config dict of a quantizer (None passes through)."""
    if quantizer is None:
        return None
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(config):
    """Inverse of `serialize` (also accepts anything `get` accepts)."""
    if isinstance(config, dict) and "module" in config:
        return keras.saving.deserialize_keras_object(config)
    return get(config)


def clone(quantizer, name=None):
    """A fresh, unbuilt copy of a quantizer (same config; `name`: the new layer's name).

    A host layer takes a copy of the quantizer it is given, so one spec object can be
    passed to many layers, and names it after its slot (`kernel`, `input`, ...)."""
    quantizer = get(quantizer)
    if quantizer is None:
        return None
    config = quantizer.get_config()
    if name is not None:
        config["name"] = name
    return type(quantizer).from_config(config)
