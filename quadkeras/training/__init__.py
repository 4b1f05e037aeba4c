"""Training: `train(config)`, coupled-L2 SGD with per-variable decay rules, epoch LR schedules
with exact resume, atomic checkpoints, a locked work_dir, a NaN/inf stop (`TrainingDiverged`),
callbacks and the run summary (what survives which fault: docs/training.md).

Example:

>>> from quadkeras.training import make_schedule, resolve_config
>>> cfg = resolve_config({"dataset": "digits", "epochs": 2})
>>> make_schedule("multistep", 0.1, 10, 2, milestones=[1]).get_config()["milestones"]
[1]
"""

from quadkeras.optimizers import (CoupledDecaySGD, EpochCosine, EpochMultiStep,  # noqa: F401 (re-exported)
                                  decay_coefficients, make_schedule)
from quadkeras.utils.lazy_names import lazy_names

# public name -> the module that defines it; each loads on first access (PEP 562), so
# `import quadkeras.training` loads no trainer. The optimizer and schedules live in
# `quadkeras.optimizers` (below the trainer: `import quadkeras` registers them).
_OPTIMIZERS = ["CoupledDecaySGD", "EpochCosine", "EpochMultiStep", "decay_coefficients", "make_schedule"]
_SOURCES = {
    "TrainingDiverged": "callbacks", "DEFAULTS": "config", "resolve_config": "config", "compile_model": "trainer",
    "evaluate": "trainer", "fast_torch_forward": "fast_forward",
    "is_fast_torch_forward": "fast_forward", "fast_torch_train_step": "fast_step",
    "is_fast_torch_train_step": "fast_step", "model_config": "config", "static_shape_torch_compile": "trainer",
    "train": "trainer", "Run": "work_dir",
}
# Checkpoint / resume internals stay in `quadkeras.training.checkpoint` and `.work_dir`.
__all__ = sorted([*_SOURCES, *_OPTIMIZERS])

__getattr__, __dir__ = lazy_names(__name__, _SOURCES)
