"""Auto-builder app: rank a trained model's layers by RI and emit a leaner model config.

    quadkeras-train --flagfile=configs/qresnet14.cfg --val_fraction=0.1 --work_dir=runs/qresnet14
    quadkeras-auto-build --flagfile=configs/auto_qresnet14.cfg
    quadkeras-auto-build --model=runs/qresnet14 --split=val --masking_ratio=0.5 --top_k=2 \
        --action=first_order --csv=/tmp/ri.csv --plot=/tmp/ri.png --output_config=/tmp/qresnet14_auto.yaml

A training work_dir (or a .keras file inside one) brings its model config, data set and
held-out split (`val_fraction`, `seed`) from its state.json; flags given explicitly win.

Prints the ranked table (baseline A0, per layer P_M, P_W, masked accuracy, δA, RI), writes
it as CSV, and writes the new config (YAML) that `quadkeras-train --model=<yaml>` accepts.
"""

from absl import flags

from quadkeras.autobuilder import (auto_build, heldout, heldout_options, load_model_and_config,
                                   training_config, write_config)
from quadkeras.autobuilder.candidates import regex_problem
from quadkeras.autobuilder.data import SPLITS
from quadkeras.autobuilder.emit import ACTIONS, model_cost
from quadkeras.autobuilder.scores import write_csv
from quadkeras.autobuilder.source import model_path
from quadkeras.cli import common
from quadkeras.cli.flag_table import define

from quadkeras.report import plot_ri, try_plot
from quadkeras.summary import count_macs
from quadkeras.utils.validation import check_choice

FLAGS = flags.FLAGS
define(["model", "dataset", "data_dir", "val_fraction", "seed", "batch_size", "plot"],
       model="qresnet14", dataset=None, val_fraction=None, seed=0, batch_size=256, notes={
           "model": "Here: a zoo name, .yaml/.json config, a .keras model, or a training work_dir "
                    "(its best.keras; config and split from its state.json).",
           "dataset": "Here: default the training run's, else digits.",
           "val_fraction": "Here: the fraction --split=val holds out; default the training "
                           "run's val_fraction, else 0.1.",
           "seed": "Here: the masking seed (the split's is --val_seed).",
           "batch_size": "Here: the evaluation batch of the probes.",
           "plot": "Here: RI per candidate layer."})
flags.DEFINE_string("config", None, "Config the .keras model was built from (default: the "
                    "training run's, else a sibling <name>.yaml).")
flags.DEFINE_string("weights", None, ".weights.h5 to load into a model built from a config.")
flags.DEFINE_enum("split", "val", list(SPLITS),
                  "Held-out split: 'val' = the seeded fraction of the training set that the "
                  "training run held out (quadkeras-train --val_fraction), or 'test'.")
flags.DEFINE_integer("val_seed", None, "Seed of the validation split (default: the training "
                     "run's --seed, else 0).")
flags.DEFINE_integer("max_examples", None, "Use at most this many held-out examples.")
flags.DEFINE_float("masking_ratio", 0.5, "Fraction of each candidate's kernel zeroed per probe.")
flags.DEFINE_float("epsilon", 1e-3, "Floor of the accuracy drop δA.")
flags.DEFINE_list("layers", None, "Candidate layer names (default: the config's candidates).")
flags.DEFINE_string("layer_regex", None, "Keep candidates whose name fully matches this regex.")
flags.DEFINE_list("layer_index", None, "Indices into the candidate list (QuadraLib's layer_index).")
flags.DEFINE_integer("top_k", None, "Change the k highest-RI layers.")
flags.DEFINE_float("param_budget", None, "Change layers until params <= this (fraction or count).")
flags.DEFINE_float("mac_budget", None, "Change layers until MACs <= this (fraction or count).")
flags.DEFINE_string("action", "first_order", "first_order (quad -> conv) or remove.")
flags.DEFINE_string("csv", None, "Write the ranked table to this CSV path.")
flags.DEFINE_string("output_config", None, "Write the emitted model config (YAML) here.")


def _regex_compiles(regex):
    """absl validator: a malformed --layer_regex is refused at flag parsing, before the model
    and data load (one line `error: flag --layer_regex=(: not a regular expression (...)`)."""
    problem = None if regex is None else regex_problem(regex)
    if problem:
        raise flags.ValidationError(problem)
    return True


flags.register_validator("layer_regex", _regex_compiles)


def app_main(argv):
    del argv
    check_choice("action", FLAGS.action, ACTIONS)
    run = training_config(FLAGS.model)
    split = heldout_options(run, FLAGS.split, FLAGS.dataset, FLAGS.val_fraction, FLAGS.val_seed)
    model, config = load_model_and_config(FLAGS.model, FLAGS.config, FLAGS.weights)
    if not FLAGS.weights and not model_path(FLAGS.model).endswith(".keras"):
        print("note: no --weights given; probing an untrained model")
    if run is not None:
        print(f"training run {run['work_dir']}: dataset={split['dataset']} "
              f"val_fraction={split['val_fraction']} seed={split['seed']} "
              f"max_train={split['max_train']}")
    x, y = heldout(input_shape=tuple(model.input_shape[1:]), data_dir=FLAGS.data_dir, model=model,
                   **split)
    if FLAGS.max_examples:
        x, y = x[: FLAGS.max_examples], y[: FLAGS.max_examples]
    layer_index = [int(i) for i in FLAGS.layer_index] if FLAGS.layer_index else None
    result = auto_build(model, x, y, config, FLAGS.layers, FLAGS.layer_regex, layer_index,
                        FLAGS.masking_ratio, FLAGS.seed, FLAGS.epsilon, FLAGS.top_k,
                        FLAGS.param_budget, FLAGS.mac_budget, FLAGS.action, FLAGS.batch_size)
    print(f"held-out: {split['dataset']} {FLAGS.split} ({len(y)} examples), "
          f"masking_ratio={FLAGS.masking_ratio}, seed={FLAGS.seed}")
    print(result.table())
    if FLAGS.csv:
        write_csv(result.scores, FLAGS.csv)
        print(f"wrote {FLAGS.csv}")
    if FLAGS.plot:
        try_plot(plot_ri, result.scores, FLAGS.plot, baseline=result.baseline)
    if result.config is None:
        print("no config for this model (pass --config): ranking only")
        return
    params0, macs0 = model.count_params(), count_macs(model)
    params, macs = model_cost(result.config)
    print(f"changed ({FLAGS.action}): {', '.join(result.chosen) or 'nothing'}")
    print(f"params {params0:,} -> {params:,}; MACs {macs0:,} -> {macs:,}")
    if FLAGS.output_config:
        write_config(result.config, FLAGS.output_config, [
            f"emitted by quadkeras-auto-build from {FLAGS.model}: {FLAGS.action} "
            f"{', '.join(result.chosen)}",
            f"A0={result.baseline:.4f} on {split['dataset']}/{FLAGS.split}; "
            f"params {params0:,} -> {params:,}; MACs {macs0:,} -> {macs:,}"])
        print(f"wrote {FLAGS.output_config}")


def main(argv=None):
    """The console script `quadkeras-auto-build` (argv: default sys.argv)."""
    common.run(app_main, argv)


if __name__ == "__main__":
    main()
