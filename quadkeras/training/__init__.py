"""Training: `train(config)`, coupled-L2 SGD with per-variable decay rules, epoch LR schedules
with exact resume, atomic checkpoints, a locked work_dir, a NaN/inf stop (`TrainingDiverged`),
callbacks and the run summary (what survives which fault: docs/training.md).

Example:

>>> cfg = resolve_config({"dataset": "digits", "epochs": 2})
>>> make_schedule("multistep", 0.1, 10, 2, milestones=[1]).get_config()["milestones"]
[1]
"""

from quadkeras.training.callbacks import TrainingDiverged
from quadkeras.training.config import DEFAULTS, resolve_config
from quadkeras.training.decay import decay_coefficients
from quadkeras.training.optimizer import CoupledDecaySGD
from quadkeras.training.schedules import EpochCosine, EpochMultiStep, make_schedule
from quadkeras.training.trainer import (compile_model, evaluate, model_config,
                                        static_shape_torch_compile, train)
from quadkeras.training.work_dir import Run

# Checkpoint / resume internals stay in `quadkeras.training.checkpoint` and `.work_dir`.
__all__ = ["CoupledDecaySGD", "DEFAULTS", "EpochCosine", "EpochMultiStep", "Run",
           "TrainingDiverged", "compile_model", "decay_coefficients", "evaluate",
           "make_schedule", "model_config", "resolve_config", "static_shape_torch_compile",
           "train"]
