"""Load the model to analyse from a zoo name, a config file, or a saved `.keras` file.

Example:

>>> model, config = load_model_and_config("qresnet14", num_classes=10, input_shape=(16, 16, 3))
>>> model.input_shape, config["family"]
((None, 16, 16, 3), 'resnet')
"""

import os

import keras

import quadkeras  # noqa: F401  (registers the serializable layers for load_model)
from quadkeras.autobuilder.emit import plain_config
from quadkeras.models import build_model, load_config


def _sibling_config(path):
    stem = os.path.splitext(path)[0]
    for ext in (".yaml", ".yml", ".json"):
        if os.path.exists(stem + ext):
            return stem + ext
    return None


def load_model_and_config(source, config=None, weights=None, num_classes=None, input_shape=None):
    """(model, config dict or None).

    Args:
        source: a `.keras` path, or a zoo name / `.yaml` / `.json` config path / dict.
        config: for `.keras` files, the config it was built from (default: a sibling
            `<name>.yaml`/`.json` if present, else None — ranking still works).
        weights: a `.weights.h5` file to load into a model built from a config.
        num_classes, input_shape: replace the config's values (config sources only).
    """
    if isinstance(source, str) and source.endswith(".keras"):
        if not os.path.exists(source):
            raise ValueError(f"Invalid model path {source!r}: file not found.")
        model = keras.models.load_model(source)
        config = config if config is not None else _sibling_config(source)
        return model, (load_config(config) if config is not None else None)
    model = build_model(source, num_classes=num_classes, input_shape=input_shape)
    if weights:
        model.load_weights(weights)
    return model, plain_config(model.quadkeras_config)
