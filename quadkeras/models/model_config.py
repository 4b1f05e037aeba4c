"""A model's build config: attached to the model, carried through clones, saved in its `.keras`.

`build_model` attaches the config it built from (`config_of(model)`); `quantize_model` and the
BSQ conversions `carry` it to the model they clone; `save_model` writes it as the archive
member `quadkeras_config.json` next to Keras' own `config.json`, and `load_model` attaches it
again, so any `.keras` quadkeras writes says which config rebuilds it (Keras ignores members
it does not know). `normalizes_input` says whether a model standardises its own input (a
config with `normalize:` adds a `keras.layers.Normalization`): its data must then be fed
scaled to [0, 1] only, never normalised a second time.

A model's identity (`identity(model)`: the hash of its config and its signature, i.e. layer
names, classes, weight shapes and parameter count) is written next to it as the member
`quadkeras_identity.json`; `check_model_identity(model_or_path, expected_config, expected)`
is the one check that a `.keras` file holds the model a caller expects (a resumed run's
`last.keras`, a run's checkpoint being exported or fine-tuned): a foreign file is refused in
one line naming the file and what differs. Files written before identities existed carry
none and are accepted on their config alone (or their built layers).

Example:

>>> import os, tempfile
>>> from quadkeras.models import build_model
>>> model = build_model("qresnet14", num_classes=10, input_shape=(16, 16, 3))
>>> path = save_model(model, os.path.join(tempfile.mkdtemp(), "m.keras"))
>>> saved_config(path)["num_classes"], config_of(load_model(path))["family"]
(10, 'resnet')
>>> normalizes_input(model)
False
>>> check_model_identity(path, config_of(model))["signature"]["params"] == model.count_params()
True
>>> check_model_identity(path, {**config_of(model), "num_classes": 7})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: Invalid model='...m.keras': not the expected model (config differs in ['num_classes']: ...
"""

import hashlib
import json
import zipfile

import keras

from quadkeras.models.builder import build_model
from quadkeras.utils.attached_config import ATTRIBUTE, attach, carry, config_of  # noqa: F401 (re-exported)
from quadkeras.utils.safe_io import load_keras_model, write_atomic

ENTRY = "quadkeras_config.json"
IDENTITY_ATTRIBUTE = "quadkeras_identity"  # the identity recorded in the file a model came from
IDENTITY_ENTRY = "quadkeras_identity.json"


def normalizes_input(model):
    """Whether `model` standardises its own input (a `keras.layers.Normalization` layer)."""
    config = config_of(model)
    if config is not None and config.get("normalize"):
        return True
    return any(isinstance(layer, keras.layers.Normalization) for layer in model.layers)


def saved_config(path):
    """The config stored in the `.keras` file at `path`, or None (written elsewhere)."""
    with zipfile.ZipFile(path) as archive:
        if ENTRY not in archive.namelist():
            return None
        return json.loads(archive.read(ENTRY))


def save_model(model, path):
    """`model.save` to `path` atomically, with its config (if any) inside; returns `path`."""
    def write(tmp):
        model.save(tmp)
        config = config_of(model)
        with zipfile.ZipFile(tmp, "a") as archive:
            if config is not None:
                archive.writestr(ENTRY, json.dumps(config, default=_plain))
            archive.writestr(IDENTITY_ENTRY, json.dumps(identity(model)))

    return write_atomic(path, write)


def load_model(path, flag="model", **kwargs):
    """`safe_io.load_keras_model` (one-line errors) with the saved config attached again
    (and the identity the file recorded, for `check_model_identity`)."""
    model = load_keras_model(path, flag, **kwargs)
    setattr(model, IDENTITY_ATTRIBUTE, {"path": str(path), "recorded": saved_identity(path)})
    return attach(model, saved_config(path))


def config_hash(config):
    """Short stable hash of a model config (None for None): what `identity` records."""
    if config is None:
        return None
    return hashlib.sha256(_canonical(config).encode()).hexdigest()[:16]


def signature(model):
    """What a model is, independent of its values: parameter count and, per top-level layer,
    [name, class, weight shapes] (a JSON-ready dict)."""
    layers = [[layer.name, type(layer).__name__, [[int(d) for d in w.shape] for w in layer.weights]]
              for layer in model.layers]
    return {"params": int(model.count_params()), "layers": layers}


def identity(model):
    """{"config_hash": hash of the config the model was built from (or None), "signature": ...}."""
    return {"config_hash": config_hash(config_of(model)), "signature": signature(model)}


def saved_identity(path):
    """The identity recorded in the `.keras` file at `path`, or None (written before
    identities, or not by quadkeras)."""
    with zipfile.ZipFile(path) as archive:
        if IDENTITY_ENTRY not in archive.namelist():
            return None
        return json.loads(archive.read(IDENTITY_ENTRY))


def check_model_identity(model_or_path, expected_config=None, expected=None, flag="model",
                         hint="pass the file this run (or config) wrote"):
    """Refuse a model that is not the one expected, in one line naming the file and what differs.

    `model_or_path`: a `.keras` path, or a model (loaded by `load_model`: the identity its
    file recorded is checked against what was actually rebuilt). `expected_config`: the model
    config it must have been built from (None: not checked). `expected`: an identity it must
    match (e.g. the one `state.json` recorded for a run's checkpoints; None: not checked).
    A file without a recorded identity (written before identities existed) is compared on
    its saved config, else on its layers against a model built from `expected_config`.
    Returns the model's identity. `hint` ends the message (what to do instead).
    """
    model, path = (None, model_or_path) if isinstance(model_or_path, (str, bytes)) or hasattr(
        model_or_path, "__fspath__") else (model_or_path, None)
    if model is None:
        recorded, config = saved_identity(path), saved_config(path)
    else:
        source = getattr(model, IDENTITY_ATTRIBUTE, None) or {}
        recorded, config, path = source.get("recorded"), config_of(model), source.get("path")
    differences = []
    if model is not None and recorded is not None:  # the file's record vs what it rebuilt
        differences += _signature_differences(recorded["signature"], signature(model), "recorded", "loaded")
    current = recorded if recorded is not None else (
        identity(model) if model is not None else None)
    if expected_config is not None:
        if config is not None:
            keys = _key_differences(config, expected_config)
            if keys:
                shown = ", ".join(f"{k}: {_short(config.get(k))} vs expected {_short(expected_config.get(k))}"
                                  for k in keys[:3])
                differences.append(f"config differs in {keys}: {shown}")
        else:  # no recorded config: compare the layers with the model the config builds
            if current is None:
                current = identity(load_model(path, flag))
            differences += _signature_differences(current["signature"],
                                                  signature(build_model(expected_config)), "file", "expected")
    if expected is not None:
        if current is None:
            current = identity(load_model(path, flag))
        mine, theirs = current.get("config_hash"), expected.get("config_hash")
        if mine and theirs and mine != theirs:
            differences.append(f"config hash {mine} vs expected {theirs}")
        differences += _signature_differences(current["signature"], expected["signature"], "file", "expected")
    if differences:
        where = f"{flag}={path!r}" if path is not None else flag
        raise ValueError(f"Invalid {where}: not the expected model ({'; '.join(dict.fromkeys(differences))}); "
                         f"{hint}.")
    return current if current is not None else identity(model)


def _canonical(value):
    return json.dumps(value, sort_keys=True, default=_plain)


def _key_differences(saved, expected):
    keys = set(saved) | set(expected)
    return sorted(k for k in keys if _canonical(saved.get(k)) != _canonical(expected.get(k)))


def _short(value, limit=60):
    text = _canonical(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _signature_differences(found, expected, found_name, expected_name):
    """One-phrase differences between two signatures ([] if equal)."""
    if _canonical(found) == _canonical(expected):
        return []
    out = []
    if found["params"] != expected["params"]:
        out.append(f"{found['params']:,} params vs {expected_name} {expected['params']:,}")
    a, b = found["layers"], expected["layers"]
    if len(a) != len(b):
        out.append(f"{len(a)} layers vs {expected_name} {len(b)}")
    for mine, theirs in zip(a, b):
        if mine != theirs:
            out.append(f"{found_name} layer {mine[0]!r} ({mine[1]} {mine[2]}) vs {expected_name} "
                       f"{theirs[0]!r} ({theirs[1]} {theirs[2]})")
            break
    return out or ["layer signature differs"]


def _plain(value):
    """JSON form of NumPy scalars / tuples a config may hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
