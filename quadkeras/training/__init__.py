"""Training: `train(config)`, coupled-L2 SGD with per-variable decay rules, epoch LR schedules
with exact resume, atomic checkpoints, a locked work_dir, a NaN/inf stop (`TrainingDiverged`),
callbacks and the run summary (what survives which fault: docs/training.md).

Example:

>>> from quadkeras.training import make_schedule, resolve_config
>>> cfg = resolve_config({"dataset": "digits", "epochs": 2})
>>> make_schedule("multistep", 0.1, 10, 2, milestones=[1]).get_config()["milestones"]
[1]
"""

import importlib

# public name -> the module that defines it; each loads on first access (PEP 562), so
# `import quadkeras.training.optimizer` (what `import quadkeras` registers) loads no trainer.
_SOURCES = {
    "TrainingDiverged": "callbacks", "DEFAULTS": "config", "resolve_config": "config",
    "decay_coefficients": "decay", "CoupledDecaySGD": "optimizer", "EpochCosine": "schedules",
    "EpochMultiStep": "schedules", "make_schedule": "schedules", "compile_model": "trainer",
    "evaluate": "trainer", "model_config": "trainer", "static_shape_torch_compile": "trainer",
    "train": "trainer", "Run": "work_dir",
}
# Checkpoint / resume internals stay in `quadkeras.training.checkpoint` and `.work_dir`.
__all__ = sorted(_SOURCES)


def __getattr__(name):
    if name not in _SOURCES:
        raise AttributeError(f"module 'quadkeras.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"quadkeras.training.{_SOURCES[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_SOURCES))
