"""Quadratize app: upgrade a trained first-order model to quadratic, same function at the start.

    python apps/convert.py --from_torch=../shared/data/bsq/resnet20_cifar10_fp.pth.tar \
        --model=resnet20 --out=r20.keras
    python apps/quadratize.py --model=r20.keras --layer_regex='stage3_block3_.*' --out=r20q.keras
    python apps/quadratize.py --model=r20.keras --top_k=3 --criterion=gradient \
        --dataset=cifar10 --data_dir=../shared/data/cifar10-jpeg.tar.gz --out=r20q.keras
    python apps/train.py --init_from=r20q.keras ...   # fine-tune like any zoo model

Thin: flags -> `quadkeras.quadratize` (docs/quadratize.md). Prints the chosen layers,
parameters and MACs before / after, and the largest logit difference of the new model
against the old one on --max_examples held-out images (random inputs without --dataset).
"""

import numpy as np
from absl import flags

from quadkeras.autobuilder import heldout, load_model_and_config, write_config
from quadkeras.autobuilder.emit import plain_config
from quadkeras.cli import common
from quadkeras.cli.flag_table import define
from quadkeras.models.model_config import attach, config_of, save_model
from quadkeras.quadratize import quadratize
from quadkeras.summary import count_macs

FLAGS = flags.FLAGS
define(["model", "dataset", "data_dir", "seed", "batch_size"], model=None, dataset=None,
       batch_size=128, notes={
           "model": "Here: the trained model to upgrade (its config says how to rebuild it).",
           "dataset": "Here: held-out images (the seeded 10 % of the training split) for "
                      "--criterion=gradient/masking and the same-function check.",
           "seed": "Here: the held-out split's seed and the masking probes' seed.",
           "batch_size": "Here: images of the one gradient step of --criterion=gradient."})
flags.DEFINE_list("layers", None, "Layer names to quadratize (first-order Conv2D layers).")
flags.DEFINE_string("layer_regex", None, "Quadratize the convertible layers whose name fully "
                    "matches this regex (with --top_k / --param_budget: the candidates).")
flags.DEFINE_integer("top_k", None, "Quadratize the k best layers by --criterion.")
flags.DEFINE_float("param_budget", None, "Quadratize the best layers by --criterion while the "
                   "ADDED parameters stay <= this (fraction of the model's when <= 1, else a count).")
flags.DEFINE_enum("neuron", "ours", ["ours", "t1"], "Quadratic neuron: ours (product of two "
                  "BN branches + linear branch) or t1 (x^T A x + linear; small layers only).")
flags.DEFINE_enum("criterion", "gradient", ["gradient", "masking", "last"], "Ranking for --top_k / "
                  "--param_budget: gradient (product-gate gradient of one SGD step; needs "
                  "--dataset), masking (auto-builder probes, lowest RI first; needs --dataset), "
                  "last (last layers first).")
flags.DEFINE_integer("max_examples", 256, "Held-out images for the criterion and the check.",
                     lower_bound=1)
flags.DEFINE_string("out", None, "Write the quadratized model (.keras) here.")
flags.DEFINE_string("output_config", None, "Also write its model config (YAML) here.")


def app_main(argv):
    del argv
    if not FLAGS.model:
        raise ValueError("Invalid model=None: expected a .keras model, a training work_dir, a zoo "
                         "name or a model config.")
    if not FLAGS.out or not FLAGS.out.endswith(".keras"):
        raise ValueError(f"Invalid out={FLAGS.out!r}: expected a path ending in .keras.")
    if FLAGS.criterion != "last" and not FLAGS.dataset and (
            FLAGS.top_k is not None or FLAGS.param_budget is not None):
        raise ValueError(f"Invalid criterion={FLAGS.criterion!r} without --dataset: it ranks on "
                         "data; pass --dataset (and --data_dir), or --criterion=last.")
    model, config = load_model_and_config(FLAGS.model)
    attach(model, config)
    print(common.backend_line())
    if FLAGS.dataset:
        x, y = heldout(FLAGS.dataset, tuple(model.input_shape[1:]), split="val",
                       seed=FLAGS.seed, data_dir=FLAGS.data_dir, model=model)
        x, y = x[:FLAGS.max_examples], y[:FLAGS.max_examples]
        where = f"{len(y)} held-out {FLAGS.dataset} images"
    else:
        x = np.random.default_rng(FLAGS.seed).normal(
            size=(FLAGS.max_examples,) + tuple(model.input_shape[1:])).astype("float32")
        y, where = None, f"{len(x)} random inputs"
    new = quadratize(model, FLAGS.layers, FLAGS.layer_regex, FLAGS.top_k, FLAGS.param_budget,
                     FLAGS.neuron, FLAGS.criterion, x, y, FLAGS.batch_size, FLAGS.seed)
    chosen = [n for n, spec in config_of(new).get("overrides", {}).items()
              if spec.get("type") == "quad" and n not in (config.get("overrides") or {})]
    print(f"quadratized ({FLAGS.neuron}): {', '.join(chosen)}")
    params0, params = model.count_params(), new.count_params()
    print(f"params {params0:,} -> {params:,} (+{params - params0:,}, {params / params0:.2f}x); "
          f"MACs {count_macs(model):,} -> {count_macs(new):,}")
    old_logits = model.predict(x, batch_size=FLAGS.batch_size, verbose=0)
    diff = np.abs(new.predict(x, batch_size=FLAGS.batch_size, verbose=0) - old_logits).max()
    print(f"same function: max |logit(new) - logit(old)| = {diff:.2e} on {where} "
          f"(max |logit| {np.abs(old_logits).max():.3g})")
    save_model(new, FLAGS.out)
    print(f"wrote {FLAGS.out}")
    if FLAGS.output_config:
        write_config(plain_config(config_of(new)), FLAGS.output_config,
                     [f"emitted by apps/quadratize.py from {FLAGS.model}: {', '.join(chosen)}"])
        print(f"wrote {FLAGS.output_config}")


def main(argv=None):
    """The console script `quadkeras-quadratize` (argv: default sys.argv)."""
    common.run(app_main, argv)


if __name__ == "__main__":
    main()
