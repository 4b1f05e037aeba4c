"""Export a trained model to SavedModel / LiteRT (float, dynamic, int8 PTQ, QAT int8) / ONNX (float,
QDQ int8) and print + write the parity report (max |dlogit|, top-1 agreement, size, op/dtype census, latency).

    KERAS_BACKEND=tensorflow quadkeras-export --model=runs/digits --out_dir=/tmp/export \
        --dataset=digits
    KERAS_BACKEND=tensorflow quadkeras-export --model=best.keras --out_dir=/tmp/export \
        --dataset=cifar10 --formats=litert_float,litert_int8
    KERAS_BACKEND=tensorflow quadkeras-export --model=qat.keras --dataset=cifar10 \
        --formats=onnx_qat          # QDQ int8 ONNX (opset 17) checked with onnxruntime

`--model` is a `.keras` file or a training work_dir (best.keras, else last.keras); models
trained under torch or JAX load the same way (the command must run with the TF backend).
`--out_dir` is written whole or not at all (built beside it, then swapped in): an existing
non-empty one is refused unless `--overwrite`, which replaces an earlier export there whole;
if a format fails, or the disk fills, nothing is written and the old folder stays as it was.
`--quant` (old spelling `--ptq_graph`; default `int8` = `int8_all`, or `int8_qat`) picks the
graph quadkeras' own calibration (`--calibration=minmax|percentile|mse`) fills; shared flags
come from quadkeras/cli/flag_table.py.
It runs under the TensorFlow backend. Started under another one (e.g. `KERAS_BACKEND=torch`
set for a torch training image), `quadkeras-export` says so in one line on stderr and runs itself
again with `KERAS_BACKEND=tensorflow` (same arguments; a `.keras` file from any backend loads
there); without TensorFlow installed it stops with one line naming what to install.
"""

import os
import sys

from absl import flags

from quadkeras.cli import common
from quadkeras.cli.flag_table import define, define_aliases
from quadkeras.export.api import CALIBRATIONS, DEFAULT_FORMATS, FORMATS, PTQ_GRAPHS, export_model
from quadkeras.export.loading import rerun_under_tensorflow
from quadkeras.utils.errors import RunAborted
from quadkeras.utils.validation import check_choice

FLAGS = flags.FLAGS
define(["model", "dataset", "quant"], model=None, quant="int8", dataset=None, notes={
    "model": "Here: a .keras file or a training work_dir.",
    "dataset": "Here: calibration (train split) and parity (test split) data; default: the "
               "work_dir's recorded dataset.",
    "quant": f"Here: the preset ({', '.join(PTQ_GRAPHS)}) whose fake-quant graph "
             "--calibration=minmax|percentile|mse fills: int8 (default) = int8_all (BN folded, "
             "every CONV/MUL/ADD int8: smaller, faster file) or int8_qat (conv/dense and "
             "quadratic branch/product int8; block BN and residual adds float)."})
define_aliases(ptq_graph="quant")  # this app's old spelling
flags.mark_flag_as_required("model")
flags.DEFINE_string("out_dir", None, "Output folder (default: <model dir>/export); written whole "
                    "or not at all.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --out_dir holding an earlier export "
                  "(its parity_report.json) whole; without it a non-empty --out_dir is refused.")
flags.DEFINE_list("formats", list(DEFAULT_FORMATS), f"{', '.join(FORMATS)}: onnx is the float "
                  "graph, onnx_int8 / onnx_qat the QDQ int8 graph of the LiteRT file (ONNX formats "
                  "need the onnx extra).")
flags.DEFINE_integer("eval_limit", 1000, "Test images compared against the Keras model.")
flags.DEFINE_integer("calibration_samples", 200, "Train images for int8 calibration.")
flags.DEFINE_integer("latency_runs", 50, "Batch-1 LiteRT invocations timed (median reported).")
flags.DEFINE_integer("num_threads", 1, "LiteRT interpreter threads.")
flags.DEFINE_enum("calibration", "converter", list(CALIBRATIONS),
                  "PTQ int8 ranges: the LiteRT converter's own min/max, or quadkeras' calibration of "
                  "the --quant fake-quant graph (quadratic branch output and product included).")


def app_main(argv, command=None):
    """The export; `command`: the whole command line, re-run under TensorFlow if needed."""
    del argv  # absl's leftovers
    rerun_under_tensorflow("quadkeras.cli.export", command or sys.argv)  # returns only under tensorflow
    check_choice("quant", FLAGS.quant, PTQ_GRAPHS)
    model_dir = FLAGS.model if os.path.isdir(FLAGS.model) else os.path.dirname(os.path.abspath(FLAGS.model))
    out_dir = FLAGS.out_dir or os.path.join(model_dir, "export")
    report = export_model(FLAGS.model, out_dir, formats=FLAGS.formats, dataset=FLAGS.dataset,
                          eval_limit=FLAGS.eval_limit, calibration_samples=FLAGS.calibration_samples,
                          latency_runs=FLAGS.latency_runs, num_threads=FLAGS.num_threads,
                          calibration=FLAGS.calibration, ptq_graph=FLAGS.quant,
                          overwrite=FLAGS.overwrite)
    failed = {name: r["error"] for name, r in report["formats"].items() if "error" in r}
    if failed:
        name, why = next(iter(failed.items()))
        raise RunAborted(f"export failed in {', '.join(failed)} ({name}: {why}); nothing was "
                         f"written, out_dir={out_dir!r} is as it was.")
    print(f"report: {os.path.join(out_dir, 'parity_report.json')}")
    return 0


def main(argv=None):
    """The console script `quadkeras-export` (argv: default sys.argv)."""
    command = list(sys.argv if argv is None else argv)
    common.run(lambda leftover: app_main(leftover, command), command)


if __name__ == "__main__":
    main()
