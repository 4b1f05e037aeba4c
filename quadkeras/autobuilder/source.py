"""Load the model to analyse: a zoo name, a config file, a `.keras` file or a training work_dir.

A `.keras` file quadkeras wrote carries the model config it was built from
(`quadkeras.models.model_config`). A training work_dir (`apps/train.py --work_dir=...`) or a
`.keras` file inside one also brings its training config along (`training.work_dir.Run`):
for older files without a stored model config it is rebuilt from it exactly as training built
the model, and `training_config` gives the data set and the `val_fraction` / `seed` of the
run's held-out split (see `heldout_options`).

Example:

>>> model, config = load_model_and_config("qresnet14", num_classes=10, input_shape=(16, 16, 3))
>>> model.input_shape, config["family"]
((None, 16, 16, 3), 'resnet')
>>> training_config("qresnet14") is None  # only work_dirs / .keras files in one have a run
True
"""

import os

import yaml

from quadkeras.autobuilder.emit import plain_config
from quadkeras.models import build_model, load_config
from quadkeras.models.model_config import config_of, load_model
from quadkeras.training.work_dir import Run, find_model_file
from quadkeras.utils.safe_io import reading


def _load_config(source, flag="model"):
    """`load_config` with a one-line error naming a missing / malformed config file."""
    if isinstance(source, str) and source.endswith((".yaml", ".yml", ".json")):
        with reading(source, flag, "model config file"):
            return load_config(source)
    return load_config(source)


def model_path(source):
    """`source`, or for a training work_dir its `best.keras` (else `last.keras`).

    >>> model_path("qvgg7")
    'qvgg7'
    """
    if not (isinstance(source, str) and os.path.isdir(source)):
        return source
    return find_model_file(source)


def training_config(source):
    """Training config of the run that wrote `source` (a work_dir or a `.keras` file next to a
    `state.json`), with DEFAULTS for keys the run did not save and `work_dir` set; else None.

    >>> training_config("configs/models/qvgg7.yaml") is None
    True
    """
    path = model_path(source)
    run = Run.of(path) if isinstance(path, str) and path.endswith(".keras") else None
    return None if run is None else run.config


def _is_model_config(path):
    try:
        config = load_config(path)
    except (ValueError, yaml.YAMLError):
        return False
    return "family" in config


def _sibling_config(path):
    """`<name>.yaml/.yml/.json` next to a `.keras` file if it is a model config (has a
    `family`), else None: a work_dir's `best.json` is the checkpoint metric, not a config."""
    stem = os.path.splitext(path)[0]
    for ext in (".yaml", ".yml", ".json"):
        if os.path.exists(stem + ext) and _is_model_config(stem + ext):
            return stem + ext
    return None


def load_model_and_config(source, config=None, weights=None, num_classes=None, input_shape=None):
    """(model, config dict or None).

    Args:
        source: a `.keras` path, a training work_dir (its best.keras), or a zoo name /
            `.yaml` / `.json` config path / dict.
        config: for `.keras` files, the config it was built from (default: the training
            run's model config from `state.json`, else a sibling `<name>.yaml`/`.json`
            model config, else None — ranking still works).
        weights: a `.weights.h5` file to load into a model built from a config.
        num_classes, input_shape: replace the config's values (config sources only).
    """
    source = model_path(source)
    if isinstance(source, str) and source.endswith(".keras"):
        if not os.path.exists(source):
            raise ValueError(f"Invalid model path {source!r}: file not found.")
        model = load_model(source, "model")
        if config is not None:
            return model, _load_config(config, "config")
        run = Run.of(source)
        from_run = config_of(model) or (run and run.model_config(model.input_shape[1:],
                                                                  model.output_shape[-1]))
        if from_run is not None:
            return model, plain_config(from_run)
        sibling = _sibling_config(source)
        return model, (load_config(sibling) if sibling is not None else None)
    model = build_model(_load_config(source), num_classes=num_classes, input_shape=input_shape)
    if weights:
        with reading(weights, "weights", ".weights.h5 file"):
            model.load_weights(weights)
    return model, plain_config(config_of(model))
