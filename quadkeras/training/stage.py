"""`RunStage`: what a kind of training run adds to the engine, handed to `train(stage=...)`.

The engine (`quadkeras.training.train`) owns the loop: checkpoints, resume, logs, schedules.
A stage that needs more (BSQ's search and finetune, `quadkeras.bsq.stage.BSQ_STAGE`) is an
object with these hooks, defined by the package that implements the method, so the trainer
imports nothing above it. The plain run is `RunStage()` itself: every hook a no-op.

Example:

>>> import keras
>>> stage = RunStage()
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
>>> stage.prepare_model(model, {}) is model, stage.callbacks({}), stage.summary(model, {})
(True, [], None)
>>> stage.check({"bsq": "search"})
Traceback (most recent call last):
...
ValueError: Invalid bsq='search' for this train() call: a BSQ stage runs with stage=quadkeras.bsq.BSQ_STAGE (quadkeras.bsq.train_bsq(config) does; apps/train.py --bsq and apps/bsq.py pass it).
"""


class RunStage:
    """The plain training run; a stage subclass overrides the hooks it needs.

    `config_key`: the config key whose (non-empty) value asks for this stage ("" = none).
    """

    config_key = ""

    def check(self, config):
        """One-line ValueError when `config` asks for a stage this object is not."""
        if config.get("bsq") and self.config_key != "bsq":
            raise ValueError(f"Invalid bsq={config['bsq']!r} for this train() call: a BSQ stage runs "
                             "with stage=quadkeras.bsq.BSQ_STAGE (quadkeras.bsq.train_bsq(config) "
                             "does; apps/train.py --bsq and apps/bsq.py pass it).")

    def prepare_model(self, model, config):
        """The model a fresh run starts from, given the loaded `init_from` model."""
        return model

    def callbacks(self, config):
        """Keras callbacks the engine puts before its checkpoint writer and loggers."""
        return []

    def measure_after_fit(self, config):
        """True when the model changes after the last validation (the engine evaluates again)."""
        return False

    def summary(self, model, config):
        """An entry for summary.json (under `config_key`), or None."""
        return None
