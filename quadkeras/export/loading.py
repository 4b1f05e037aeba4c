"""Find and load the model to export: a `.keras` file or a training work_dir, TF backend only.

Models trained under torch or JAX are saved as `.keras` and re-loaded under TensorFlow:

    KERAS_BACKEND=tensorflow python apps/export.py --model=/path/to/best.keras --out_dir=/tmp/exp

or, from a torch/JAX Python session, `reload_under_tensorflow(path, out_dir)` (a TF subprocess).

Example:

>>> resolve_model_path("/no/such/model.keras")
Traceback (most recent call last):
...
ValueError: Invalid model path '/no/such/model.keras': file not found; expected a .keras file or a training work_dir containing best.keras or last.keras.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras

from quadkeras.models.model_config import check_model_identity
from quadkeras.models.model_config import load_model as load_saved_model
from quadkeras.training.work_dir import MODEL_FILES, Run, find_model_file

EXPORT_COMMAND = "KERAS_BACKEND=tensorflow python apps/export.py --model=PATH --out_dir=DIR"


def require_tensorflow(what="SavedModel/LiteRT export"):
    """Raise a one-line ValueError unless the Keras backend is TensorFlow."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"Invalid Keras backend {backend!r} for {what}: expected 'tensorflow'. Save the model "
            f"as .keras and run `{EXPORT_COMMAND}` (or call "
            "quadkeras.export.reload_under_tensorflow(path, out_dir) from this session).")


RERUN_MARK = "QUADKERAS_RERUN_UNDER_TENSORFLOW"  # set in the re-run process: no second re-run


def rerun_under_tensorflow(module, argv, execve=os.execve):
    """Re-run `python -m <module> <argv[1:]>` with `KERAS_BACKEND=tensorflow`, unless already there.

    For the export command: Keras' backend is fixed when Keras is first imported, so a process
    started under torch or JAX cannot switch; it replaces itself (`os.execve`) with the same
    command under TensorFlow after one line on stderr. Returns (doing nothing) when the backend
    is already TensorFlow; raises a one-line ValueError when TensorFlow is not installed or the
    re-run process is still not on it (a `keras.json` cannot override the environment variable,
    so that means KERAS_BACKEND was ignored).

    Example:

    >>> import keras
    >>> calls = []
    >>> rerun_under_tensorflow("quadkeras.cli.export", ["quadkeras-export", "--model=m.keras"],
    ...                        execve=lambda *a: calls.append(a))
    >>> len(calls) == (keras.backend.backend() != "tensorflow")
    True
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    if os.environ.get(RERUN_MARK):
        raise ValueError(f"Invalid Keras backend {backend!r} after re-running under KERAS_BACKEND="
                         f"tensorflow: expected 'tensorflow'; run `{EXPORT_COMMAND}`.")
    if importlib.util.find_spec("tensorflow") is None:
        raise ValueError(f"Invalid Keras backend {backend!r} for SavedModel/LiteRT export: expected "
                         "'tensorflow', which is not installed (pip install tensorflow-cpu).")
    print(f"{os.path.basename(argv[0])}: KERAS_BACKEND={backend}; exporting under tensorflow "
          "(a .keras file from any backend loads there)", file=sys.stderr, flush=True)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", RERUN_MARK: "1"}
    execve(sys.executable, [sys.executable, "-m", module, *argv[1:]], env)


def resolve_model_path(path):
    """The `.keras` file for `path` (a `.keras` file, or a work_dir with best/last.keras)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return find_model_file(path, "model path")
    if not os.path.isfile(path):
        raise ValueError(f"Invalid model path {path!r}: file not found; expected a .keras file or a "
                         f"training work_dir containing {' or '.join(MODEL_FILES)}.")
    if not path.endswith(".keras"):
        raise ValueError(f"Invalid model path {path!r}: expected a file ending in .keras or a work_dir.")
    return path


def load_model(path, custom_objects=None):
    """Load a `.keras` file (or work_dir) with quadkeras' layers registered; clear errors."""
    path = resolve_model_path(path)
    try:
        model = load_saved_model(path, "model", custom_objects=custom_objects, compile=False)
    except (TypeError, ValueError) as err:
        text = str(err).replace("\n", " ")
        if "Could not locate" in text or "Unknown" in text or "custom_objects" in text:
            raise ValueError(
                f"Invalid model {path!r}: it uses a custom object Keras cannot find ({text[:200]}). "
                "Import the module that defines it (decorated with "
                "@keras.saving.register_keras_serializable) or pass custom_objects={...}.") from err
        raise
    check_run_identity(model, path)
    return model


def check_run_identity(model, path):
    """Refuse, in one line, a model file that is not its work_dir's run's model (another
    model's file copied in): its recorded identity against what was rebuilt, the model
    config the run builds and the identity `state.json` recorded (files and runs from before
    identities existed check what they have)."""
    run = Run.of(path)
    expected_config = expected = None
    if run is not None:
        expected = run.state.get("model")
        try:
            expected_config = run.model_config(tuple(model.input_shape[1:]), int(model.output_shape[-1]))
        except (ValueError, KeyError, TypeError):  # the config file the run started from is gone
            expected_config = None
    check_model_identity(model, expected_config, expected, flag="model",
                         hint="export the file the run wrote, or a .keras outside a work_dir")


def check_finite_weights(model, source="model"):
    """Raise a one-line ValueError naming the first weight holding NaN/inf (nothing exported).

    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> _ = m.layers[0].bias.assign([float("nan")])
    >>> check_finite_weights(m, "m.keras")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Invalid model 'm.keras': weight '.../bias' holds 1 NaN/inf values; ...
    """
    import numpy as np  # noqa: PLC0415

    for variable in model.weights:
        bad = int(np.size(variable) - np.isfinite(keras.ops.convert_to_numpy(variable)).sum())
        if bad:
            raise ValueError(f"Invalid model {str(source)!r}: weight {variable.path!r} holds {bad} "
                             "NaN/inf values; a diverged model cannot be exported (use an earlier "
                             "checkpoint, e.g. best.keras; nothing was written).")


def work_dir_dataset(path):
    """The dataset name recorded in a work_dir's `state.json` config, or None."""
    run = Run.of(path)
    return None if run is None else run.dataset


def reload_under_tensorflow(model_path, out_dir, formats=None, dataset=None, timeout=900,
                            overwrite=False):
    """Export a `.keras` file saved under any backend in a `KERAS_BACKEND=tensorflow` subprocess.

    Returns the report dict (also written to `out_dir/parity_report.json`); `overwrite` as
    in `export_model` (an existing non-empty `out_dir` is refused without it).
    """
    resolve_model_path(model_path)
    args = {"model_or_path": os.fspath(model_path), "out_dir": os.fspath(out_dir),
            "dataset": dataset, "overwrite": bool(overwrite)}
    if formats is not None:
        args["formats"] = list(formats)
    code = ("import json, sys; from quadkeras.export import export_model; "
            "r = export_model(**json.loads(sys.argv[1]), verbose=False); print('REPORT' + json.dumps(r))")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"TensorFlow export subprocess failed (rc={proc.returncode}): "
                           f"{proc.stderr.strip().splitlines()[-1:] or proc.stdout[-300:]}")
    return json.loads(lines[-1][len("REPORT"):])
