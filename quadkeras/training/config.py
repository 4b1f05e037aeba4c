"""Training run configuration: defaults (the seed recipe), validation and resume keys.

Example:

>>> cfg = resolve_config({"dataset": "digits", "epochs": 3})
>>> cfg["lr"], cfg["schedule"], cfg["grad_clip"], cfg["batch_size"], cfg["val_fraction"]
(0.1, 'cosine', 0.5, 256, 0.0)
>>> resolve_config({"lr_schedule": "cosine"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: Invalid training config key='lr_schedule': expected one of 'model', ...
"""

import numbers

from quadkeras.data.loaders import DATASETS
from quadkeras.data.pipeline import AUGMENT_PRESETS, PIPELINES, resolve_pipeline
from quadkeras.models import load_config
from quadkeras.quantize.model import GRAPH_PRESETS
from quadkeras.quantize.model import quant_scheme as scheme
from quadkeras.quantize.scheme import FULL_PRECISION, METHODS, PRESETS
from quadkeras.quantizers.base import REGISTRY
from quadkeras.training.jit import JIT_COMPILE, check_jit_backend
from quadkeras.optimizers.sgd import MOMENTUM_FORMS
from quadkeras.optimizers.schedules import SCHEDULES
from quadkeras.utils.safe_io import reading
from quadkeras.utils.validation import check_choice, check_positive_int

# Seed recipe (QuadraLib's CIFAR training setting): SGD 0.1, momentum 0.9 in torch.optim.SGD's
# form, coupled L2 5e-4, cosine to 1e-4 over 200 epochs, batch 256, pad-4 crop + flip, global
# grad-norm clip 0.5. val_fraction 0 keeps its "best test accuracy" checkpoint; > 0 holds out
# that seeded fraction of the training split
# (seed = `seed`) as validation data for best.keras / val_acc instead.
DEFAULTS = {
    "model": "qresnet14", "dataset": "cifar10", "data_dir": None, "cache_dir": None,
    "max_train": 0, "max_test": 0, "val_fraction": 0.0,
    "epochs": 200, "batch_size": 256, "eval_batch_size": 512,
    "lr": 0.1, "momentum": 0.9, "nesterov": False, "momentum_form": "torch",
    "schedule": "cosine", "final_lr": 1e-4, "milestones": [], "gamma": 0.1, "warmup_epochs": 0,
    "wd": 5e-4, "decay_small": False, "custom_decay_list": "", "custom_decay": None,
    "label_smoothing": 0.0, "augment": "crop_flip", "mixup": 0.0, "cutmix": 0.0,
    "data_pipeline": "auto",
    "grad_clip": 0.5, "mixed_precision": "", "seed": 0, "deterministic": False,
    "quant": "", "wbits": 4, "abits": 4, "quant_first_last": False, "quant_shortcut": False,
    "init_from": None,
    "work_dir": "runs/default", "resume": False, "evaluate_only": False, "checkpoint": None,
    "tensorboard": True, "verbose": 1, "stop_on_nan": True, "distribute": "",
    # compile the train step: auto = torch.compile on torch with CUDA, eager on a torch CPU,
    # Keras' choice on tensorflow/jax (XLA on GPU); reduce_overhead = torch.compile with CUDA
    # graphs (torch only). None = not given: auto, or a resumed run's recorded setting
    # (quadkeras.training.jit, docs/training.md)
    "jit_compile": None,
    # BSQ stages on this engine (quadkeras.bsq.stage): '' = plain training.
    "bsq": "", "bsq_decay": 0.01, "bsq_prun_int": 50, "bsq_precision_increase": True,
    "bsq_quantize_bias": False,
}
# Keys that may change between a run and its resume (they do not affect the result).
RUNTIME_KEYS = ("data_dir", "cache_dir", "work_dir", "resume", "evaluate_only", "checkpoint",
                "tensorboard", "verbose", "eval_batch_size", "stop_on_nan", "distribute", "jit_compile")
# Keys added after runs were saved: left out of the resume view while at their default, so
# a work_dir written before the key existed still resumes.
ADDED_KEYS = ("val_fraction", "momentum_form", "data_pipeline", "bsq", "bsq_decay",
              "bsq_prun_int", "bsq_precision_increase", "bsq_quantize_bias")
MIXED_PRECISION = ("", "float16", "bfloat16")
DISTRIBUTE = ("", "data_parallel")  # '' = one device (quadkeras.training.distribute)
BSQ_STAGES = ("", "search", "finetune")  # quadkeras.bsq.stage


def resolve_config(config=None, **overrides):
    """DEFAULTS updated with `config` and `overrides`, validated; returns a new dict."""
    merged = dict(DEFAULTS)
    for key, value in {**(config or {}), **overrides}.items():
        check_choice("training config key", key, tuple(DEFAULTS))
        merged[key] = value
    check_choice("dataset", merged["dataset"], DATASETS)
    check_choice("schedule", merged["schedule"], SCHEDULES)
    check_choice("augment", merged["augment"], tuple(AUGMENT_PRESETS))
    check_choice("data_pipeline", merged["data_pipeline"], PIPELINES)
    check_choice("mixed_precision", merged["mixed_precision"], MIXED_PRECISION)
    check_choice("momentum_form", merged["momentum_form"], MOMENTUM_FORMS)
    check_choice("distribute", merged["distribute"], DISTRIBUTE)
    if merged["jit_compile"] is not None:
        merged["jit_compile"] = str(merged["jit_compile"]).lower()
        check_choice("jit_compile", merged["jit_compile"], JIT_COMPILE)
        check_jit_backend(merged["jit_compile"])
    check_choice("bsq", merged["bsq"], BSQ_STAGES)
    check_positive_int("bsq_prun_int", merged["bsq_prun_int"])
    for key in ("epochs", "batch_size", "eval_batch_size"):
        check_positive_int(key, merged[key])
    for key in ("max_train", "max_test"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"Invalid {key}={value!r}: expected an integer >= 0 (0 = the whole "
                             "split, N = a seeded subset of N examples).")
    check_quant_bits(merged["quant"], merged["wbits"], merged["abits"])
    for key in ("lr", "wd", "grad_clip", "label_smoothing", "mixup", "cutmix", "warmup_epochs",
                "bsq_decay"):
        if float(merged[key]) < 0:
            raise ValueError(f"Invalid {key}={merged[key]!r}: expected a number >= 0.")
    merged["val_fraction"] = _check_val_fraction(merged["val_fraction"])
    if merged["custom_decay_list"] and merged["custom_decay"] is None:
        raise ValueError("Invalid custom_decay=None: set custom_decay when custom_decay_list is given.")
    merged["milestones"] = [int(m) for m in (merged["milestones"] or [])]
    if merged["bsq"] and (merged["quant"] or not merged["init_from"]):
        raise ValueError(f"Invalid bsq={merged['bsq']!r} with quant={merged['quant']!r}, init_from="
                         f"{merged['init_from']!r}: a BSQ stage starts from a .keras model "
                         "(init_from) and quantizes it itself; set init_from and leave quant empty.")
    return merged


def check_quant_bits(quant, wbits, abits):
    """One-line ValueError naming `wbits` / `abits` when the bit width is not one the `quant`
    method takes (0 or 32 = that part stays float). Presets fix their own bits; without
    `quant` (or for a BSQ stage) the widths only have to lie in [0, 32]."""
    method = str(quant or "").lower()
    names = METHODS.get(method, (None, None)) if method not in PRESETS and method not in GRAPH_PRESETS \
        else (None, None)
    for key, value, quantizer in (("wbits", wbits, names[0]), ("abits", abits, names[1])):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= 32:
            raise ValueError(f"Invalid {key}={value!r}: expected an integer bit width in [0, 32] "
                             "(0 or 32 = float).")
        if not method or method not in METHODS or value in FULL_PRECISION:
            continue
        allowed = REGISTRY[quantizer].allowed_bits if quantizer else ()
        if value not in allowed:
            widths = ", ".join(str(b) for b in allowed)
            raise ValueError(f"Invalid {key}={value!r} for quant={method!r}: expected 0 or 32 "
                             f"(float){' or one of ' + widths if widths else ''}.")


def _check_val_fraction(value):
    """`val_fraction` as a float in [0, 1) (0 = fit on the whole training split)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"Invalid val_fraction={value!r}: expected a number in [0, 1) "
                         "(0 = no validation split, best.keras picked on the test split).")
    return float(value)


def resume_view(config):
    """The part of a config that must match for `--resume` (what `state.json` records):
    `data_pipeline='auto'` is recorded as the pipeline it resolved to ('tf' or 'numpy')."""
    view = {k: v for k, v in config.items()
            if k not in RUNTIME_KEYS and not (k in ADDED_KEYS and v == DEFAULTS[k])}
    if "data_pipeline" in config:
        view["data_pipeline"] = resolve_pipeline(config["data_pipeline"])
    return view


def comparable_view(view):
    """A resume view as `--resume` compares it: the keys added after a run was saved at their
    defaults, `data_pipeline` resolved (a run started with 'auto' resumes with the explicit
    pipeline auto chose, and the other way round)."""
    view = {**{k: DEFAULTS[k] for k in ADDED_KEYS}, **view}
    view["data_pipeline"] = resolve_pipeline(view["data_pipeline"] or "auto")
    return view


def model_config(config, input_shape, num_classes):
    """Model config dict for the run: zoo/YAML model + dataset shape + optional quant scheme."""
    source = config["model"]
    if isinstance(source, str) and source.endswith((".yaml", ".yml", ".json")):
        with reading(source, "model", "model config file"):
            model_cfg = load_config(source)
    else:
        model_cfg = load_config(source)
    model_cfg["input_shape"] = list(input_shape)
    model_cfg["num_classes"] = int(num_classes)
    if config["quant"]:
        model_cfg["quantize"] = quant_scheme(config)
    return model_cfg


def quant_scheme(config):
    """The quantization scheme of a run's `quant` (a method or a preset) / `wbits` / `abits` /
    `quant_*` keys."""
    return scheme(config["quant"], config["wbits"], config["abits"], config["quant_first_last"],
                  config["quant_shortcut"], trained=bool(config["init_from"]))
