"""BSQ stages as training-engine runs: `train_bsq(config)`, i.e. `quadkeras.training.train`
with `bsq="search"|"finetune"` and `stage=BSQ_STAGE`.

The engine owns the loop (atomic `last.keras` / `best.keras`, `state.json`, exact `resume`,
TensorBoard, `history.csv`, `summary.json`, LR schedules, `CoupledDecaySGD`); this module
only supplies what a BSQ stage adds to it:

* `prepare_model(model, config)`: the model a fresh stage starts from (`init_from`):
  - search: the bit representation (a float model is converted with `to_bsq` at `wbits` bits,
    `abits` activations, `quant_shortcut`, `bsq_quantize_bias`; a BSQ model is used as it
    is) and the regulariser strength `bsq_decay` (BSQ's alpha, `set_bsq_decay`);
  - finetune: the same scheme in the fixed-precision float representation.
* `stage_callbacks(config)`: the search's `BSQCallback` (re-quantize / adjust precision at
  epochs 0, prun_int, 2*prun_int, ... and after the last epoch, optimizer slots zeroed). Its
  steps depend only on the epoch number, and the callback runs before the checkpoint writer,
  so `--resume` from any epoch repeats the uninterrupted run exactly.
* `stage_summary(model, config)`: the `bsq` entry of `summary.json` (scheme, average bits,
  compression vs 32-bit).

`BSQ_STAGE` hands these to the engine as its `RunStage` hooks (the trainer imports nothing of
BSQ).

Example:

>>> import keras
>>> from quadkeras.training.config import resolve_config
>>> fp = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
>>> cfg = resolve_config(bsq="search", init_from="fp.keras", wbits=8, abits=0, bsq_decay=0.1)
>>> scheme_of(prepare_model(fp, cfg))
{'fc': 8}
>>> stage_summary(prepare_model(fp, cfg), cfg)["average_bits"]
8.0
"""

from quadkeras.bsq.callback import BSQCallback
from quadkeras.bsq.convert import bsq_layers, scheme_of, set_bsq_decay, to_bsq, to_representation
from quadkeras.bsq.report import bsq_report
from quadkeras.training.stage import RunStage
from quadkeras.training.trainer import train


def prepare_model(model, config):
    """`model` (the loaded `init_from`) ready for the stage `config["bsq"]`."""
    stage = config["bsq"]
    if stage == "search":
        if not bsq_layers(model):
            model = to_bsq(model, bits=config["wbits"], abits=config["abits"],
                           quantize_shortcuts=config["quant_shortcut"],
                           quantize_bias=config["bsq_quantize_bias"])
        set_bsq_decay(model, config["bsq_decay"])
        return model
    if stage == "finetune":
        if not bsq_layers(model):
            raise ValueError(f"Invalid init_from={config['init_from']!r} for bsq='finetune': no BSQ "
                             "layer in the model; finetune a BSQ search result (model_bin.keras).")
        return to_representation(model, "float")
    raise ValueError(f"Invalid bsq={stage!r}: expected 'search' or 'finetune'.")


def stage_callbacks(config):
    """Callbacks the engine puts before its checkpoint writer (none for finetune)."""
    if config["bsq"] != "search":
        return []
    return [BSQCallback(config["bsq_prun_int"], precision_increase=config["bsq_precision_increase"],
                        verbose=int(config["verbose"] > 0), epochs=config["epochs"])]


def stage_summary(model, config):
    """`summary.json`'s `bsq` entry: stage, scheme, average bits, compression rate."""
    report = bsq_report(model)
    return {"stage": config["bsq"], "alpha": float(config["bsq_decay"]) if config["bsq"] == "search" else None,
            "scheme": scheme_of(model), "average_bits": report["average_bits"],
            "compression_rate": report["compression_rate"], "total_params": report["total_params"]}


class BSQStage(RunStage):
    """The engine's hooks for a BSQ stage (`config["bsq"]`: `search` or `finetune`)."""

    config_key = "bsq"

    def check(self, config):
        if config.get("bsq") not in ("search", "finetune"):
            raise ValueError(f"Invalid bsq={config.get('bsq')!r} for a BSQ stage: expected 'search' "
                             "or 'finetune'.")

    def prepare_model(self, model, config):
        return prepare_model(model, config)

    def callbacks(self, config):
        return stage_callbacks(config)

    def measure_after_fit(self, config):
        return config["bsq"] == "search"  # re-quantized after the last validation

    def summary(self, model, config):
        return stage_summary(model, config)


BSQ_STAGE = BSQStage()


def train_bsq(config=None, callbacks=None, **overrides):
    """`quadkeras.training.train` of a BSQ stage (`bsq="search"` or `"finetune"` in the config
    or the overrides); returns the run summary, whose `bsq` entry is `stage_summary`'s."""
    return train(config, callbacks, stage=BSQ_STAGE, **overrides)
