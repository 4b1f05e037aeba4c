"""The optimizer and LR schedules a training run saves with its model (registered, so
`keras.models.load_model` restores a run's `last.keras` after `import quadkeras`), and the
per-variable L2 decay rules they apply. Below the trainer: loading a checkpoint needs no
training code.

Example:

>>> opt = CoupledDecaySGD(learning_rate=make_schedule("cosine", 0.1, 10, 20), l2=5e-4)
>>> opt.momentum_form, SCHEDULES
('keras', ('cosine', 'multistep', 'constant'))
"""

from quadkeras.optimizers.decay import check_decay_list, decay_coefficients
from quadkeras.optimizers.schedules import SCHEDULES, EpochCosine, EpochMultiStep, make_schedule
from quadkeras.optimizers.sgd import MOMENTUM_FORMS, CoupledDecaySGD

__all__ = ["MOMENTUM_FORMS", "SCHEDULES", "CoupledDecaySGD", "EpochCosine", "EpochMultiStep",
           "check_decay_list", "decay_coefficients", "make_schedule"]
