"""`export_model`: SavedModel + LiteRT (float, dynamic, int8 PTQ, QAT int8) + parity report.

Example (TensorFlow backend):

>>> import keras, os, tempfile
>>> model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3),
...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
>>> out_dir = os.path.join(tempfile.mkdtemp(), "export")
>>> report = export_model(model, out_dir, formats=("litert_float", "litert_int8"),
...                       representative_data="digits", eval_data="digits", verbose=False)
>>> report["formats"]["litert_float"]["max_abs_diff"] < 1e-4
True
"""

import json
import os

import keras
import numpy as np

from quadkeras.bsq.convert import activation_scales, batch_scaled_activations, fix_activation_scales
from quadkeras.data import load_data
from quadkeras.data.prepare import dataset_arrays
from quadkeras.export import convert, loading, onnx_export, parity
from quadkeras.export.quad_qat import quantized_quad_layers
from quadkeras.quantize import quantize_model
from quadkeras.quantize.calibration import calibrate
from quadkeras.utils.safe_io import atomic_dir, check_replaceable, environment_error
from quadkeras.utils.validation import check_choice

CALIBRATIONS = ("converter", "minmax", "percentile", "mse")
# the fake-quant graph quadkeras' own calibration fills; `int8` (default) = `int8_all`
PTQ_GRAPHS = ("int8", "int8_all", "int8_qat")
FORMATS = ("saved_model", "litert_float", "litert_dynamic", "litert_int8", "litert_qat", "onnx",
           "onnx_int8", "onnx_qat", "onnx_int4")
DEFAULT_FORMATS = ("saved_model", "litert_float", "litert_dynamic", "litert_int8", "litert_qat")
REPORT = "parity_report.json"  # written last into the build folder; marks an export folder
QAT_HINT = ("model has no fakequant quantizers; fine-tune it with quantize_model(model, 'int8') "
            "(or --quant=int8 --init_from=<trained.keras>) to export QAT int8")


def _as_arrays(data, split, limit, model, arg):
    if data is None:
        return None, None
    if isinstance(data, str):
        return dataset_arrays(data, split, limit, model=model)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        x, y = np.asarray(x, "float32")[:limit], np.asarray(y).reshape(-1)[:limit]
    else:
        x, y = np.asarray(data, "float32")[:limit], None
    model_shape = _model_input_shape(model)
    if model_shape is not None and not _shape_fits(model_shape, x.shape[1:]):
        raise ValueError(f"Invalid {arg}: images of shape {tuple(x.shape[1:])}, but the model takes "
                         f"{model_shape} inputs (nothing was written).")
    return x, y


def _model_input_shape(model):
    shape = getattr(model, "input_shape", None)
    return tuple(shape[1:]) if isinstance(shape, tuple) else None  # (a list: several inputs)


def _shape_fits(model_shape, data_shape):
    return len(model_shape) == len(data_shape) and all(
        m is None or m == d for m, d in zip(model_shape, data_shape))


def check_dataset_fits(name, model, arg="dataset"):
    """Raise a one-line ValueError naming `arg` unless dataset `name`'s images have the model's
    input shape and its class count the model's output width (a digits model exported with
    cifar10 data would fail deep inside Keras, or compare logits against the wrong labels)."""
    data = load_data(name)
    data_shape, classes = tuple(data.x_train.shape[1:]), int(data.num_classes)
    model_shape = _model_input_shape(model)
    output = getattr(model, "output_shape", None)
    model_classes = output[-1] if isinstance(output, tuple) else None
    if (model_shape is None or _shape_fits(model_shape, data_shape)) and model_classes in (None, classes):
        return
    raise ValueError(f"Invalid {arg}={name!r} for this model: the dataset's images are {data_shape} "
                     f"with {classes} classes, the model takes {model_shape} inputs and gives "
                     f"{model_classes} classes; export with the dataset it was trained on "
                     "(nothing was written).")


def check_out_dir(out_dir, overwrite=False, model_path=None):
    """One-line ValueError unless `out_dir` may receive a new export: absent or empty, or with
    `overwrite` a folder holding an earlier export (its parity_report.json) and not the model."""
    check_replaceable(out_dir, overwrite)
    if not (overwrite and os.path.isdir(out_dir) and os.listdir(out_dir)):
        return
    if not os.path.isfile(os.path.join(out_dir, REPORT)):
        raise ValueError(f"Invalid out_dir={os.fspath(out_dir)!r}: it holds files but no {REPORT}, so "
                         "it is not an earlier export and --overwrite (overwrite=True) will not "
                         "delete it; choose another folder (nothing was written).")
    if model_path is not None and os.path.realpath(model_path).startswith(
            os.path.realpath(out_dir) + os.sep):
        raise ValueError(f"Invalid out_dir={os.fspath(out_dir)!r}: it holds the model being exported "
                         f"({model_path!r}), which replacing the folder would delete; choose another "
                         "out_dir (nothing was written).")


def _load(model_or_path, custom_objects):
    if isinstance(model_or_path, keras.Model):
        return model_or_path, getattr(model_or_path, "name", "model")
    path = loading.resolve_model_path(model_or_path)
    return loading.load_model(path, custom_objects), path


def export_model(model_or_path, out_dir, formats=DEFAULT_FORMATS, representative_data=None,
                 eval_data=None, custom_objects=None, eval_limit=1000, calibration_samples=200,
                 latency_runs=50, num_threads=1, verbose=True, calibration="converter",
                 ptq_graph="int8", overwrite=False, dataset=None):
    """Export a model and return (and write `out_dir/parity_report.json`) the parity report.

    `out_dir` is written whole or not at all: everything is built in a sibling folder
    `.tmp-<name>-<pid>-<hex>/` and swapped in at the end (`safe_io.atomic_dir`), so `out_dir` is
    always the previous export or the complete new one. An export in which a format failed
    writes nothing (the returned report says which, with `"written": False`); so does a full
    disk (an OSError naming `out_dir`). Build folders of killed exports are removed by the next
    export into the same `out_dir`.

    Args:
        model_or_path: a Keras model, a `.keras` file, or a training work_dir.
        out_dir: output folder (`saved_model/`, `model_<mode>.tflite`, `model[_<mode>].onnx`,
            `parity_report.json`). An existing non-empty one is refused unless `overwrite`.
        overwrite: replace an existing `out_dir` that holds an earlier export (its
            parity_report.json) whole: its files from other formats or models do not survive.
        dataset: a dataset name for both `representative_data` (train split) and `eval_data`
            (test split) where those are not given; refused unless its images have the model's
            input shape and its class count the model's outputs (`check_dataset_fits`).
        formats: subset of `FORMATS`; `onnx` is the float graph, `onnx_int8` / `onnx_qat` the
            LiteRT int8 / QAT file as a QDQ ONNX graph (see `onnx_export`), `onnx_int4` the
            float graph of a <= 4-bit model with packed INT4 weights (opset 21), all run by
            onnxruntime for the parity report.
        representative_data: calibration inputs for `litert_int8`: a dataset name (its train
            split), float NHWC images, or (images, labels). Default: `eval_data` if it is a name.
        eval_data: parity inputs: a dataset name (its test split), images, or (images, labels).
        eval_limit / calibration_samples: how many images to compare / calibrate on.
        latency_runs, num_threads: LiteRT latency measurement (batch 1, median).
        calibration: how `litert_int8` (PTQ) sets activation ranges: `converter` (the LiteRT
            converter's own min/max calibration), or `minmax` / `percentile` / `mse`: the model
            is wrapped with the `ptq_graph` fake-quant (incl. quadratic layers' branch output
            and product) and `quadkeras.quantize.calibration.calibrate` sets the ranges.
        ptq_graph: with those calibrations, the fake-quant graph: `int8` (default) =
            `int8_all` (every BN folded, fake-quant on every ReLU and add too: every
            CONV/MUL/ADD int8, smaller and faster; `int8_model`), or the per-layer `int8_qat`
            (conv/dense layers, quadratic branch output and product; block BN and residual
            adds stay float in the file).

    Returns:
        {"model", "out_dir", "num_eval_images", "formats": {format: report}}; a LiteRT report
        holds max_abs_diff, top1_agreement, accuracy, size_bytes, latency_ms and census
        (see `parity.parity_report`); a failed format holds "error", a skipped one "skipped".
        "written" says whether `out_dir` now holds this export. A BSQ model's per-batch
        activation scales are fixed at their max over the calibration images first
        (`quadkeras.bsq.fix_activation_scales`; listed under "bsq_activation_scales").
    """
    loading.require_tensorflow()
    formats = tuple(formats)
    if not formats:
        raise ValueError(f"Invalid formats={list(formats)}: expected at least one of "
                         f"{', '.join(FORMATS)} (nothing exported).")
    for fmt in formats:
        check_choice("format", fmt, FORMATS)
    check_choice("calibration", calibration, CALIBRATIONS)
    check_choice("ptq_graph", ptq_graph, PTQ_GRAPHS)
    if calibration != "converter":
        calibration = (calibration, ptq_graph)  # (method, graph) for _calibrated_ptq
    for fmt in formats:
        if fmt.startswith("onnx"):
            onnx_export.require_onnx(fmt)
    final_dir = os.path.realpath(os.fspath(out_dir))
    check_out_dir(final_dir, overwrite)  # before any work
    model, source = _load(model_or_path, custom_objects)
    check_out_dir(final_dir, overwrite, None if isinstance(model_or_path, keras.Model) else source)
    loading.check_finite_weights(model, source)
    (eval_data, eval_arg), (representative_data, rep_arg) = _data_sources(
        model_or_path, dataset, eval_data, representative_data)
    for i, (data, arg) in enumerate(((eval_data, eval_arg), (representative_data, rep_arg))):
        if isinstance(data, str) and (i == 0 or not isinstance(eval_data, str) or data != eval_data):
            check_dataset_fits(data, model, arg)
    x_eval, y_eval = _as_arrays(eval_data, "test", eval_limit, model, eval_arg)
    x_rep, _ = _as_arrays(representative_data, "train", calibration_samples, model, rep_arg)
    model, scales = _fixed_activation_scales(model, x_rep, x_eval)
    reference = None if x_eval is None else np.asarray(model.predict(x_eval, batch_size=256, verbose=0))
    excluded = {}
    if reference is not None:
        x_eval, y_eval, reference, excluded["eval"] = _finite_only(x_eval, y_eval, reference)
    if x_rep is not None:
        rep_out = np.asarray(model.predict(x_rep, batch_size=256, verbose=0))
        x_rep, _, _, excluded["calibration"] = _finite_only(x_rep, None, rep_out)
    if any(excluded.values()) and verbose:
        print(f"warning: {excluded} images left out: the Keras model's logits are not finite on "
              "them (e.g. an undertrained quadratic net; see docs/quadratic_layers.md)", flush=True)

    report = {"model": str(source), "out_dir": os.fspath(out_dir),
              "num_eval_images": 0 if x_eval is None else int(len(x_eval)),
              "non_finite_images_excluded": excluded, "formats": {}, "written": False}
    if scales:
        report["bsq_activation_scales"] = scales
    try:
        with atomic_dir(final_dir, overwrite=overwrite) as build_dir:  # all or nothing
            _export_formats(report["formats"], formats, model, build_dir, final_dir, x_rep, x_eval,
                            y_eval, reference, calibration_samples, latency_runs, num_threads,
                            calibration, verbose)
            if any("error" in r for r in report["formats"].values()):
                raise _FormatFailed  # nothing moves into place: out_dir stays as it was
            with open(os.path.join(build_dir, REPORT), "w") as f:
                json.dump({**report, "written": True}, f, indent=2)
        report["written"] = True
    except _FormatFailed:
        for result in report["formats"].values():
            result.pop("path", None)
        if verbose:
            print(f"nothing written: a format failed; {os.fspath(out_dir)!r} was left as it was",
                  flush=True)
    except Exception as err:
        env = _environment_failure(err, final_dir)
        if env is None:
            raise
        raise env from err
    return report


def _data_sources(model_or_path, dataset, eval_data, representative_data):
    """((eval data, the argument it came from), (calibration data, its argument)): `dataset`
    fills what is not given, then a work_dir's recorded dataset; calibration defaults to the
    eval dataset's name."""
    eval_arg, rep_arg = "eval_data", "representative_data"
    if dataset is not None:
        if eval_data is None:
            eval_data, eval_arg = dataset, "dataset"
        if representative_data is None:
            representative_data, rep_arg = dataset, "dataset"
    if eval_data is None and isinstance(model_or_path, (str, os.PathLike)):
        eval_data, eval_arg = loading.work_dir_dataset(os.fspath(model_or_path)), "dataset"
    if representative_data is None and isinstance(eval_data, str):
        representative_data, rep_arg = eval_data, eval_arg
    return (eval_data, eval_arg), (representative_data, rep_arg)


class _FormatFailed(Exception):
    """Raised inside the build when a format failed: the build folder is discarded."""


def _environment_failure(err, final_dir):
    """For a full disk / read-only folder behind `err`, an OSError naming `final_dir` (the
    build folder a failed write names is gone by now) or the outside path it names; else None."""
    env = environment_error(err)
    if env is None:
        return None
    inside = env.filename is None or os.path.realpath(env.filename).startswith(
        os.path.join(os.path.dirname(final_dir), ".tmp-"))
    return OSError(env.errno, env.strerror, final_dir if inside else env.filename)


def _export_formats(results, formats, model, build_dir, final_dir, x_rep, x_eval, y_eval,
                    reference, samples, runs, threads, calibration, verbose):
    """Write every format into `build_dir`, filling `results` (paths as they will be in
    `final_dir`)."""
    sm_dir = os.path.join(build_dir, "saved_model")
    needs_sm = any(f.startswith("litert") or f in ("saved_model", "onnx_int8", "onnx_qat")
                   for f in formats)
    if needs_sm:
        convert.write_saved_model(model, sm_dir)
    litert = {}  # mode -> flatbuffer (or an error), shared with ONNX
    for fmt in formats:
        result = _export_one(fmt, model, build_dir, sm_dir, x_rep, x_eval, y_eval, reference,
                             samples, runs, threads, calibration, litert)
        if "path" in result:
            result["path"] = os.path.join(final_dir, os.path.relpath(result["path"], build_dir))
        results[fmt] = result
        if verbose:
            print(parity.format_report(fmt, result), flush=True)


def _fixed_activation_scales(model, x_rep, x_eval):
    """(model, {layer: S}): a BSQ model with per-batch activation scales becomes a copy with
    fixed ones (their max over the calibration images, else the eval images): an exported
    file must give one output per image, not one that depends on its batch mates."""
    if not batch_scaled_activations(model):
        return model, {}
    images = x_rep if x_rep is not None and len(x_rep) else x_eval
    if images is None or not len(images):
        raise ValueError("Invalid representative_data=None for a BSQ model with per-batch activation "
                         "scales: pass calibration images or a dataset name (export fixes each "
                         "scale at its max over them; docs/bsq.md).")
    fixed = fix_activation_scales(model, images)
    return fixed, activation_scales(fixed)


def _export_one(fmt, model, out_dir, sm_dir, x_rep, x_eval, y_eval, reference, samples, runs, threads,
                calibration="converter", litert=None):
    if fmt == "saved_model":
        return {"path": sm_dir, "size_bytes": _dir_size(sm_dir)}
    if fmt.startswith("onnx"):
        return _export_onnx(fmt, model, out_dir, sm_dir, x_rep, x_eval, y_eval, reference, samples,
                            runs, threads, calibration, {} if litert is None else litert)
    mode = fmt[len("litert_"):]
    content = _litert_content(mode, model, out_dir, sm_dir, x_rep, reference, samples, calibration)
    if isinstance(content, dict):
        return content
    if litert is not None:
        litert[mode] = content
    path = convert.write_bytes(os.path.join(out_dir, f"model_{mode}.tflite"), content)
    if reference is None:
        return {"path": path, "size_bytes": len(content), "census": parity.op_census(content)}
    result = parity.parity_report(content, reference, x_eval, y_eval, latency_runs=runs,
                                  num_threads=threads)
    return {"path": path, **result}


def _litert_content(mode, model, out_dir, sm_dir, x_rep, reference, samples, calibration):
    """LiteRT flatbuffer bytes for `mode`, or a {"skipped"/"error": why} report."""
    if mode == "qat" and not convert.has_fake_quant(model):
        return {"skipped": QAT_HINT}
    if reference is not None and not len(reference) and mode in ("int8", "qat"):
        # the converter aborts the process on infinite quantization scales
        return {"error": "the Keras model gives non-finite outputs on every eval image; fix the "
                         "model (e.g. BN statistics, diverged training) before int8 export"}
    if mode == "int8" and x_rep is not None and not len(x_rep):
        return {"error": "the Keras model gives non-finite outputs on every calibration image"}
    if mode == "int8" and x_rep is None:
        return {"skipped": "no representative_data (pass a dataset name or images) for PTQ int8"}
    try:
        source = sm_dir
        if mode == "int8" and calibration != "converter":
            source, mode = _calibrated_ptq(model, out_dir, x_rep[:samples], *calibration), "qat"
        elif mode == "qat" and quantized_quad_layers(model):
            source = os.path.join(out_dir, "saved_model_qat")
            convert.write_saved_model(model, source, calibration_images=x_rep)
        return convert.to_litert(source, mode, x_rep, samples)
    except Exception as err:  # converter errors are long MLIR dumps: keep the first line
        if environment_error(err) is not None:
            raise  # a full disk fails the whole export, not one format
        return {"error": _first_line(err)}


def _export_onnx(fmt, model, out_dir, sm_dir, x_rep, x_eval, y_eval, reference, samples, runs,
                 threads, calibration, litert):
    """`onnx` from the Keras model, `onnx_int8` / `onnx_qat` from the LiteRT flatbuffer."""
    mode = fmt[len("onnx_"):] if "_" in fmt else None
    path = os.path.join(out_dir, f"model_{mode}.onnx" if mode else "model.onnx")
    try:
        if mode is None:
            onnx_export.keras_to_onnx(model, path)
        elif mode == "int4":
            onnx_export.keras_to_onnx_int4(model, path)
        else:
            if mode not in litert:
                litert[mode] = _litert_content(mode, model, out_dir, sm_dir, x_rep, reference,
                                               samples, calibration)
            if isinstance(litert[mode], dict):
                return litert[mode]
            onnx_export.litert_to_onnx(litert[mode], path)
    except Exception as err:  # tf2onnx errors: keep the first line
        if environment_error(err) is not None:
            raise
        return {"error": _first_line(err)}
    if reference is None:
        return {"path": path, "size_bytes": os.path.getsize(path), "opset": onnx_export.file_opset(path),
                "census": onnx_export.onnx_census(path)}
    return {"path": path, **onnx_export.onnx_parity_report(path, reference, x_eval, y_eval,
                                                           latency_runs=runs, num_threads=threads)}


def _first_line(err):
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"


def _calibrated_ptq(model, out_dir, images, method, graph="int8"):
    """SavedModel of `model` with the `graph` fake-quant (`int8` / `int8_all` / `int8_qat`), ranges
    calibrated on `images`."""
    if convert.has_fake_quant(model):
        raise ValueError("the model already has fake-quant quantizers: export it with litert_qat")
    qmodel = quantize_model(model, graph)
    calibrate(qmodel, images, method=method)
    path = os.path.join(out_dir, "saved_model_ptq")
    convert.write_saved_model(qmodel, path)
    return path


def _finite_only(x, y, outputs):
    """(x, y, outputs, how many dropped): only the rows whose model outputs are all finite.

    Calibrating int8 on an image with inf activations makes the converter abort, and parity
    against NaN logits means nothing; the report says how many were left out.
    """
    keep = np.all(np.isfinite(outputs.reshape(len(outputs), -1)), axis=1)
    dropped = int((~keep).sum())
    if not dropped:
        return x, y, outputs, 0
    return x[keep], None if y is None else y[keep], outputs[keep], dropped


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
