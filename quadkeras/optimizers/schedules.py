"""Learning-rate schedules driven by `optimizer.iterations`, so a resumed run continues at
exactly the same position (the step counter is saved with the optimizer).

Both schedules change the LR once per epoch, as PyTorch's `CosineAnnealingLR` /
`MultiStepLR` stepped after every epoch do, after an optional linear warmup counted in steps.

- `EpochCosine`: lr(e) = final + (base - final) * (1 + cos(pi * e / epochs)) / 2.
- `EpochMultiStep`: lr(e) = base * gamma ** (number of milestones <= e).
- warmup: during the first `warmup_epochs * steps_per_epoch` steps,
  lr = base * (step + 1) / warmup_steps (both schedules).

Example:

>>> s = EpochCosine(0.1, steps_per_epoch=10, epochs=200, final_lr=1e-4)
>>> [round(float(s(step)), 6) for step in (0, 9, 10, 1999)]
[0.1, 0.1, 0.099994, 0.000106]
>>> m = EpochMultiStep(0.1, steps_per_epoch=10, milestones=[1, 3], gamma=0.1)
>>> [round(float(m(step)), 6) for step in (9, 10, 29, 30)]
[0.1, 0.01, 0.01, 0.001]
"""

import math

import keras
from keras import ops

from quadkeras.utils.validation import check_choice, check_positive_int

SCHEDULES = ("cosine", "multistep", "constant")


class _EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, base_lr, steps_per_epoch, warmup_epochs=0):
        self.base_lr = float(base_lr)
        self.steps_per_epoch = check_positive_int("steps_per_epoch", int(steps_per_epoch))
        if warmup_epochs < 0:
            raise ValueError(f"Invalid warmup_epochs={warmup_epochs!r}: expected >= 0.")
        self.warmup_epochs = warmup_epochs

    def epoch_lr(self, epoch):
        raise NotImplementedError

    def __call__(self, step):
        step = ops.cast(step, "float32")
        epoch = ops.floor(step / self.steps_per_epoch)
        lr = ops.cast(self.epoch_lr(epoch), "float32")
        warmup_steps = float(self.warmup_epochs * self.steps_per_epoch)
        if warmup_steps > 0:
            warm = self.base_lr * (step + 1.0) / warmup_steps
            lr = ops.where(step < warmup_steps, warm, lr)
        return lr

    def get_config(self):
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "warmup_epochs": self.warmup_epochs}


@keras.saving.register_keras_serializable(package="quadkeras")
class EpochCosine(_EpochSchedule):
    """Cosine annealing from `base_lr` to `final_lr` over `epochs`, stepped per epoch."""

    def __init__(self, base_lr, steps_per_epoch, epochs, final_lr=0.0, warmup_epochs=0):
        super().__init__(base_lr, steps_per_epoch, warmup_epochs)
        self.epochs = check_positive_int("epochs", int(epochs))
        self.final_lr = float(final_lr)

    def epoch_lr(self, epoch):
        progress = ops.minimum(epoch, float(self.epochs)) / self.epochs
        return self.final_lr + (self.base_lr - self.final_lr) * 0.5 * (1.0 + ops.cos(math.pi * progress))

    def get_config(self):
        return {**super().get_config(), "epochs": self.epochs, "final_lr": self.final_lr}


@keras.saving.register_keras_serializable(package="quadkeras")
class EpochMultiStep(_EpochSchedule):
    """`base_lr * gamma ** k` where k = how many `milestones` (epochs) are <= the epoch."""

    def __init__(self, base_lr, steps_per_epoch, milestones=(), gamma=0.1, warmup_epochs=0):
        super().__init__(base_lr, steps_per_epoch, warmup_epochs)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)

    def epoch_lr(self, epoch):
        passed = ops.zeros_like(epoch)
        for milestone in self.milestones:
            passed = passed + ops.cast(epoch >= milestone, "float32")
        return self.base_lr * ops.power(self.gamma, passed)

    def get_config(self):
        return {**super().get_config(), "milestones": self.milestones, "gamma": self.gamma}


def make_schedule(name, base_lr, steps_per_epoch, epochs, final_lr=1e-4, milestones=(),
                  gamma=0.1, warmup_epochs=0):
    """Build a schedule by name: 'cosine', 'multistep' or 'constant' (multistep, no milestones)."""
    name = check_choice("schedule", name, SCHEDULES)
    if name == "cosine":
        return EpochCosine(base_lr, steps_per_epoch, epochs, final_lr, warmup_epochs)
    milestones = milestones if name == "multistep" else ()
    return EpochMultiStep(base_lr, steps_per_epoch, milestones, gamma, warmup_epochs)
