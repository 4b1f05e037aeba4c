"""The final JSON summary of a run (`summary.json` in the work_dir).

Example:

>>> from quadkeras.models import build_model
>>> s = model_facts(build_model("resnet20", num_classes=10))
>>> s["params_total"] > 0 and s["macs"] > 0
True
"""

import math

import keras

from quadkeras.summary import count_macs


def model_facts(model):
    """Trainable / total parameter counts and MACs (via `quadkeras.summary.count_macs`)."""
    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    return {"params_trainable": int(trainable), "params_total": int(model.count_params()),
            "macs": int(count_macs(model))}


def _acc(value):
    return None if value is None else float(value)


def model_label(config):
    """What a run trains, as the banner and summary.json name it: the zoo name, "config" for a
    model config, or `init_from=<file>` for a fine-tune (its `model` key is then unused).

    >>> model_label({"model": "resnet20", "init_from": None})
    'resnet20'
    >>> model_label({"model": "qresnet14", "init_from": "runs/fp/best.keras"})
    'init_from=runs/fp/best.keras'
    """
    if config.get("init_from"):
        return f"init_from={config['init_from']}"
    return config["model"] if isinstance(config["model"], str) else "config"


def run_summary(model, config, test_acc, best_acc, wall_time_s, train_time_s, train_images,
                epochs_run, val_acc=None):
    """Dict written to summary.json: accuracies, params, MACs, timing, img/s, backend, epochs.

    `test_acc`: the final model on the test split; `val_acc`: on the held-out validation
    split (None when the run has no `val_fraction`); `best_acc`: best.keras' metric (the
    validation accuracy, or the test accuracy without a validation split).
    """
    return {
        "model": model_label(config),
        "dataset": config["dataset"], "backend": keras.backend.backend(),
        "test_acc": _acc(test_acc), "val_acc": _acc(val_acc), "best_acc": _acc(best_acc),
        "val_fraction": float(config.get("val_fraction", 0.0)),
        **model_facts(model),
        "wall_time_s": round(float(wall_time_s), 3),
        "train_time_s": round(float(train_time_s), 3),
        "img_per_s": round(train_images / train_time_s, 2) if train_time_s > 0 else None,
        "epochs": int(config["epochs"]), "epochs_run": int(epochs_run),
        "quant": config["quant"] or None,
    }
