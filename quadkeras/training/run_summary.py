"""The final JSON summary of a run (`summary.json` in the work_dir).

Example:

>>> from quadkeras.models import build_model
>>> s = model_facts(build_model("resnet20", num_classes=10))
>>> s["params_total"] > 0 and s["macs"] > 0
True
"""

import math

import keras


def model_facts(model):
    """Trainable / total parameter counts and MACs (via `quadkeras.summary.count_macs`)."""
    from quadkeras.summary import count_macs

    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    return {"params_trainable": int(trainable), "params_total": int(model.count_params()),
            "macs": int(count_macs(model))}


def run_summary(model, config, test_acc, best_acc, wall_time_s, train_time_s, train_images,
                epochs_run):
    """Dict written to summary.json: accuracies, params, MACs, timing, img/s, backend, epochs."""
    return {
        "model": config["model"] if isinstance(config["model"], str) else "config",
        "dataset": config["dataset"], "backend": keras.backend.backend(),
        "test_acc": None if test_acc is None else float(test_acc),
        "best_acc": None if best_acc is None else float(best_acc),
        **model_facts(model),
        "wall_time_s": round(float(wall_time_s), 3),
        "train_time_s": round(float(train_time_s), 3),
        "img_per_s": round(train_images / train_time_s, 2) if train_time_s > 0 else None,
        "epochs": int(config["epochs"]), "epochs_run": int(epochs_run),
        "quant": config["quant"] or None,
    }
