"""The main job end to end on the embedded digits data (what `make run` runs).

1. trains the small QResNet of `configs/quickstart.cfg` (quadratic BasicBlocks) on digits;
2. fine-tunes it for int8 QAT (`--quant=fakequant`, 8/8 bits, first/last/shortcut included);
3. exports LiteRT float, PTQ int8 and QAT int8 under the TensorFlow backend (a run under
   torch or JAX exports through a TensorFlow subprocess) and prints the parity reports.

    quadkeras-quickstart                          # KERAS_BACKEND=tensorflow by default
    KERAS_BACKEND=torch quadkeras-quickstart --epochs=10 --work_dir=runs/qs_torch
    quadkeras-quickstart --resume      # after Ctrl-C: continues the newest run in work_dir

Any `quadkeras-train` flag overrides the flagfile (e.g. `--epochs`); `--qat_epochs=0` skips QAT.
The flagfile and its model config come from `common.configs_dir()` (the checkout's `configs/`
or the installed `<prefix>/share/quadkeras/configs`), so it runs from any folder; its output
goes to `--work_dir` (runs/quickstart, relative to the current folder).
"""

import json
import os
import subprocess
import sys
import time

import keras
from absl import app, flags, logging

from quadkeras.cli import common
from quadkeras.cli import train as _train  # noqa: F401 (defines the training flags)
from quadkeras.export import export_model
from quadkeras.training import DEFAULTS, checkpoint, train
from quadkeras.training.work_dir import stage_run_folder
from quadkeras.utils.errors import RunAborted

FLAGS = flags.FLAGS
flags.DEFINE_integer("qat_epochs", 3, "int8 QAT fine-tuning epochs after float training (0 = skip).")
flags.DEFINE_float("qat_lr", 0.01, "Learning rate of the QAT fine-tune (cosine to final_lr).")


def default_flags():
    """The quickstart flagfile and its model config, as absolute paths (any working folder).

    >>> [a.split("=")[0] for a in default_flags()]
    ['--flagfile', '--model']
    """
    configs = common.configs_dir()
    if configs is None:
        raise FileNotFoundError("quickstart: no configs folder (expected configs/ in the checkout "
                                "or <prefix>/share/quadkeras/configs of the installed package).")
    return [f"--flagfile={os.path.join(configs, 'quickstart.cfg')}",
            f"--model={os.path.join(configs, 'models', 'quickstart_qresnet.yaml')}"]


def _export(model_path, out_dir, formats):
    """Export with parity on the digits test split; in-process under TF, else a TF subprocess."""
    if keras.backend.backend() == "tensorflow":
        return export_model(model_path, out_dir, formats=formats, eval_data="digits",
                            eval_limit=360, latency_runs=50)
    print(f"quickstart: exporting {model_path} through a KERAS_BACKEND=tensorflow subprocess", flush=True)
    cmd = [sys.executable, "-m", "quadkeras.cli.export", f"--model={model_path}",
           f"--out_dir={out_dir}", f"--formats={','.join(formats)}", "--dataset=digits", "--eval_limit=360"]
    proc = subprocess.run(cmd, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RunAborted(f"export of {model_path!r} failed in the TensorFlow subprocess "
                         f"(rc={proc.returncode}): {last}")
    with open(os.path.join(out_dir, "parity_report.json")) as f:
        return json.load(f)


def _result_line(name, r):
    if "top1_agreement" not in r:
        return f"  {name:14s} {r.get('error') or r.get('skipped') or 'no parity data'}"
    c = r["census"]
    return (f"  {name:14s} acc {100 * r['accuracy']:6.2f}%  agree {100 * r['top1_agreement']:6.2f}%  "
            f"max|dlogit| {r['max_abs_diff']:.2e}  conv/dense int8 {c['weight_ops_int8']}/{c['weight_ops']}  "
            f"{r['size_bytes'] / 1024:7.1f} KiB  {r['latency_ms']:.3f} ms/img")


def app_main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unknown arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # TF's SavedModel writer logs at INFO through absl
    print(f"quadkeras-quickstart: {common.backend_line()}", flush=True)

    config = {name: FLAGS[name].value for name in DEFAULTS}
    # every run is its own <work_dir>/<timestamp>; --resume continues the newest one
    run_dir = stage_run_folder(config["work_dir"], config["resume"], "float")
    config.update(work_dir=os.path.join(run_dir, "float"), tensorboard=False)
    start = time.perf_counter()
    float_summary = train(config)
    model_paths = {"float": os.path.join(config["work_dir"], checkpoint.BEST)}
    if FLAGS.qat_epochs > 0:
        qat_dir = os.path.join(run_dir, "qat")
        qat = dict(config, work_dir=qat_dir, init_from=model_paths["float"],
                   quant="fakequant", wbits=8, abits=8, quant_first_last=True,
                   quant_shortcut=True, epochs=FLAGS.qat_epochs, lr=FLAGS.qat_lr,
                   resume=config["resume"] and os.path.exists(os.path.join(qat_dir, checkpoint.STATE)))
        qat_summary = train(qat)
        model_paths["qat"] = os.path.join(qat["work_dir"], checkpoint.LAST)
    train_s = time.perf_counter() - start
    reports = {"float": _export(model_paths["float"], os.path.join(run_dir, "export"),
                                ("litert_float", "litert_int8"))}
    if "qat" in model_paths:
        reports["qat"] = _export(model_paths["qat"], os.path.join(run_dir, "export_qat"), ("litert_qat",))

    print(f"\nquickstart summary ({common.backend_line()}, digits 16x16x1, 360 test images)")
    print(f"  float model: test acc {100 * float_summary['test_acc']:.2f}% (best "
          f"{100 * float_summary['best_acc']:.2f}%), {float_summary['params_trainable']:,} params, "
          f"{float_summary['macs']:,} MACs, {float_summary['epochs_run']} epochs")
    if "qat" in model_paths:
        print(f"  int8 QAT fine-tune: test acc {100 * qat_summary['test_acc']:.2f}% after "
              f"{qat_summary['epochs_run']} epochs")
    print(f"  training {train_s:.1f} s; LiteRT parity vs the Keras model:")
    for source, report in reports.items():
        for fmt, r in report["formats"].items():
            print(_result_line(fmt, r))
    print(f"  files: {run_dir}")


def main(argv=None):
    """The console script `quadkeras-quickstart` (argv: default sys.argv); the user's flags
    come after the quickstart flagfile, so they win."""
    argv = list(sys.argv if argv is None else argv)
    common.run(app_main, argv=[argv[0], *default_flags(), *argv[1:]])


if __name__ == "__main__":
    main()
