"""Recorded auto-builder run: train QResNet14 and QVGG-7 briefly on digits, rank layers by RI
on a validation split, retrain the emitted configs the same way, compare with the original.

    KERAS_BACKEND=tensorflow .venv/bin/python bench/auto_build_run.py --epochs=8

Digits (16x16x1 uint8), both models at 16x16x1. QVGG-7's five max-pools need >= 32x32, so
here its LAST max-pool is dropped (cfg [64, 64, M, 128, 128, M, 256, M, 512, M, 512]: same
convs and params, 1x1x512 before the classifier) -- 4x fewer MACs than upsampling to 32x32,
which took ~100 s per epoch on our 2 CPU cores. Validation = a seeded 10 % of the training
split (never trained on) for the probes; accuracy reported on the test split.
"""

import time

import keras
import numpy as np
from absl import app, flags

from quadkeras.autobuilder import auto_build
from quadkeras.autobuilder.data import load_arrays
from quadkeras.data import split_validation
from quadkeras.autobuilder.scores import accuracy
from quadkeras.models import build_model
from quadkeras.summary import count_macs

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 8, "Training epochs for the original and the emitted model.")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_float("lr", None, "Adam learning rate (default: per model, see RUNS).")
flags.DEFINE_list("models", ["qresnet14", "qvgg7"], "Zoo models to run.")

QVGG7_16 = [64, 64, "M", 128, 128, "M", 256, "M", 512, "M", 512]
RUNS = {  # model -> (input shape, config overrides, Adam lr, auto-builder options)
    "qresnet14": ((16, 16, 1), {}, 1e-2, {"param_budget": 0.75, "action": "first_order"}),
    "qvgg7": ((16, 16, 1), {"cfg": QVGG7_16}, 1e-3, {"top_k": 2, "action": "remove"}),
}


def train(config, data, lr):
    keras.utils.set_random_seed(0)
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.Adam(FLAGS.lr or lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.time()
    model.fit(data["x"], data["y"], batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, verbose=0)
    return model, time.time() - start


def describe(label, model, data, seconds):
    acc = accuracy(model, data["x_test"], data["y_test"])
    print(f"| {label} | {model.count_params():,} | {count_macs(model):,} | {acc:.4f} | "
          f"{seconds:.0f} |")


def run(name):
    shape, config_overrides, lr, options = RUNS[name]
    arrays = load_arrays("digits", shape)
    x, y, x_val, y_val = split_validation(arrays["x_train"], arrays["y_train"], 0.1, seed=0)
    data = {"x": x, "y": y, "x_test": arrays["x_test"], "y_test": arrays["y_test"]}
    config = build_model(name, num_classes=10, input_shape=shape,
                         **config_overrides).quadkeras_config
    model, seconds = train(config, data, lr)
    print(f"\n### {name} on digits {shape} {config_overrides or ''}, {FLAGS.epochs} epochs, "
          f"Adam lr={FLAGS.lr or lr}, auto-builder {options}")
    logits = model.predict(x_val, verbose=0)
    print(f"val images with non-finite logits: {int((~np.isfinite(logits).all(axis=-1)).sum())}")
    start = time.time()
    result = auto_build(model, x_val, y_val, config, masking_ratio=0.5, seed=0, **options)
    probe_seconds = time.time() - start
    print(f"probing {len(result.scores)} layers on {len(y_val)} val images took "
          f"{probe_seconds:.0f} s\n```\n{result.table()}\n```")
    print(f"changed: {', '.join(result.chosen)}\n")
    new_model, new_seconds = train(result.config, data, lr)
    print("| model | params | MACs | test acc | train s |\n|---|---:|---:|---:|---:|")
    describe(name, model, data, seconds)
    describe(f"{name} auto ({options['action']}: {', '.join(result.chosen)})", new_model, data,
             new_seconds)


def main(argv):
    del argv
    print(f"backend={keras.backend.backend()} epochs={FLAGS.epochs} batch={FLAGS.batch_size}")
    for name in FLAGS.models:
        run(name)


if __name__ == "__main__":
    app.run(main)
