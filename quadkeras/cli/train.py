"""Train a zoo / YAML model on digits, CIFAR-10 or CIFAR-100 (absl flags, flagfiles).

    KERAS_BACKEND=tensorflow quadkeras-train --flagfile=configs/quickstart.cfg
    quadkeras-train --flagfile=configs/qresnet14.cfg --work_dir=runs/q14 --resume
    KERAS_BACKEND=torch torchrun --nproc_per_node=2 -m quadkeras.cli.train --flagfile=configs/quickstart.cfg \
        --distribute=data_parallel

All logic lives in `quadkeras.training.train`; this file only maps flags to its config.
From a checkout, `python apps/train.py ...` runs the same `main()`.
"""

from absl import app, flags

from quadkeras.cli import common
from quadkeras.cli.flag_table import define

from quadkeras.report import plot_history, try_plot
from quadkeras.bsq.stage import train_bsq
from quadkeras.training import checkpoint, train
from quadkeras.training.config import DEFAULTS
from quadkeras.training.distribute import is_primary_process

FLAGS = flags.FLAGS
define(DEFAULTS)  # every training config key is a flag, with its DEFAULTS value
flags.DEFINE_boolean("plots", True, "At the end, draw loss/accuracy/LR curves from history.csv into "
                     "<work_dir>/curves.png (needs matplotlib).")


def app_main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unknown arguments: {argv[1:]}")
    print(f"quadkeras-train: {common.backend_line()}", flush=True)
    config = {name: FLAGS[name].value for name in DEFAULTS}
    primary = is_primary_process()  # before training: a malformed TF_CONFIG fails here
    result = (train_bsq if config["bsq"] else train)(config)  # BSQ: its stage hooks
    if FLAGS.evaluate_only:
        print(f"test_acc={result['test_acc']:.4f} ({result['checkpoint']})")
    elif FLAGS.plots and primary:  # the process that wrote the work_dir
        try_plot(plot_history, f"{FLAGS.work_dir}/{checkpoint.HISTORY}", f"{FLAGS.work_dir}/curves.png")


def main(argv=None):
    """The console script `quadkeras-train` (argv: default sys.argv)."""
    common.run(app_main, argv)


if __name__ == "__main__":
    main()
