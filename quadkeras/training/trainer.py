"""`train(config)`: the whole training run, usable from user code and from `apps/train.py`.

One `model.fit` call per epoch, each with its own seeded data order (`seed + epoch`), so a
resumed run sees the same batches; the LR schedule and optimizer slots come back with
`last.keras` (the schedule is a function of `optimizer.iterations`). Writes to `work_dir`:
`last.keras`, `best.keras` (+ `best.json`), `state.json`, `history.csv`, `tensorboard/`,
`summary.json`.

Example:

>>> import tempfile
>>> s = train({"dataset": "digits", "model": "resnet20", "epochs": 1, "batch_size": 128,
...            "augment": "none", "work_dir": tempfile.mkdtemp(), "verbose": 0})  # doctest: +SKIP
>>> s["backend"] in ("tensorflow", "torch", "jax")  # doctest: +SKIP
True
"""

import dataclasses
import os
import time

import keras

from quadkeras.backend import active as active_backend
from quadkeras.data import AUGMENT_PRESETS, load_data, make_dataset, seeded_subset, training_split
from quadkeras.data.prepare import input_stats
from quadkeras.quantize import initialize_quantizers, quantize_model, quantized_layers
from quadkeras.quantize.model import GRAPH_PRESETS
from quadkeras.optimizers.decay import check_decay_list
from quadkeras.optimizers.sgd import CoupledDecaySGD
from quadkeras.optimizers.schedules import make_schedule
from quadkeras.training import checkpoint
from quadkeras.training.callbacks import (CheckpointSaver, LearningRateLogger, NonFiniteGuard,
                                          RunProgbar)
from quadkeras.training.config import model_config, quant_scheme, resolve_config, resume_view
from quadkeras.training.distribute import make_plan, open_plan_run
from quadkeras.training.fast_forward import fast_torch_forward
from quadkeras.training.interrupt import CtrlCCheck, CtrlCLatch
from quadkeras.training.jit import (FirstStepTimer, apply_jit_compile, resolve_jit_compile,  # noqa: F401
                                    run_jit_setting, static_shape_torch_compile)
from quadkeras.training.run_summary import model_label, run_summary
from quadkeras.training.stage import RunStage
from quadkeras.models import build_model
from quadkeras.models.model_config import check_model_identity, load_model
from quadkeras.training.work_dir import find_model_file, interrupted_run_line, trim_history
from quadkeras.utils.optional import tensorflow_available
from quadkeras.utils.errors import RunInterrupted, os_error_line
from quadkeras.utils.safe_io import clean_temp_files, reading


def initial_model(config, data, stage=None):
    """The model a fresh run starts from: built from `model`, or `init_from`'s weights.

    With `init_from` (a `.keras` file, e.g. a trained float model) the run fine-tunes that
    model, quantized per `quant` / `wbits` / `abits` when set (QAT from a float checkpoint).
    """
    if not config["init_from"]:
        if config["quant"] in GRAPH_PRESETS:  # folds BN: a trained model's inference statistics
            raise ValueError(f"Invalid quant={config['quant']!r} without init_from: the all-int8 "
                             "graph folds BatchNorm, so it fine-tunes a trained float model; set "
                             "init_from=<model.keras>.")

        return _check_quantized(build_model(model_config(config, data.input_shape,
                                                         data.num_classes)), config)
    path = config["init_from"]
    model = load_model(path, "init_from", compile=False)
    model = (stage or RunStage()).prepare_model(model, config)  # BSQ: its bit representation
    expected = (tuple(data.input_shape), int(data.num_classes))
    found = (tuple(model.input_shape[1:]), int(model.output_shape[-1]))
    if found != expected:
        raise ValueError(f"Invalid init_from={path!r}: model takes {found[0]} with {found[1]} "
                         f"classes, dataset={config['dataset']!r} needs {expected[0]} with "
                         f"{expected[1]} classes.")
    if config["quant"]:
        model = quantize_model(model, quant_scheme(config))
    return _check_quantized(model, config)


def _check_quantized(model, config):
    """With `quant` set, refuse a model in which the scheme quantized no layer."""
    if config["quant"] and not quantized_layers(model):
        raise ValueError(
            f"Invalid quant={config['quant']!r}: it quantized no layer of this model "
            f"(wbits={config['wbits']}, abits={config['abits']}, quant_first_last="
            f"{config['quant_first_last']}, quant_shortcut={config['quant_shortcut']}); pass "
            "--quant_first_last / --quant_shortcut, bits < 32, or train without --quant.")
    return model


def _one_hot_needed(config):
    return config["label_smoothing"] > 0 or config["mixup"] > 0 or config["cutmix"] > 0


def compile_model(model, config, steps_per_epoch):
    """Compile with CoupledDecaySGD, the LR schedule, grad-norm clip and the right loss."""
    check_decay_list(model.trainable_variables, config["custom_decay_list"])
    schedule = make_schedule(config["schedule"], config["lr"], steps_per_epoch, config["epochs"],
                             config["final_lr"], config["milestones"], config["gamma"],
                             config["warmup_epochs"])
    optimizer = CoupledDecaySGD(
        learning_rate=schedule, momentum=config["momentum"], nesterov=config["nesterov"],
        momentum_form=config["momentum_form"],
        l2=config["wd"], decay_small=config["decay_small"],
        custom_decay_list=config["custom_decay_list"] or None, custom_decay=config["custom_decay"],
        global_clipnorm=config["grad_clip"] or None)
    if _one_hot_needed(config):
        loss = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                    label_smoothing=config["label_smoothing"])
        acc = keras.metrics.CategoricalAccuracy(name="acc")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        acc = keras.metrics.SparseCategoricalAccuracy(name="acc")
    setting = run_jit_setting(config["jit_compile"], None)
    model.compile(optimizer=optimizer, loss=loss, metrics=[acc],
                  jit_compile=resolve_jit_compile(setting))
    # torch: static shapes, the mode; float and quantized models alike (no data-init branch:
    # `train` initialises the quantizers eagerly before the first compiled step)
    apply_jit_compile(model, setting)
    return model


def datasets(config, data, epoch, stats):
    """(train dataset for `epoch`, test dataset) with labels shaped for the loss.

    `stats`: the (mean, std) pixels are normalised with (`input_stats(data, model)`).
    """
    one_hot = _one_hot_needed(config)
    aug = dict(keras_augment(config))
    pipeline = config.get("data_pipeline", "auto")
    train_ds = make_dataset(data.x_train, data.y_train, config["batch_size"], True, *stats,
                            augment=aug, seed=config["seed"] * 100003 + epoch,
                            num_classes=data.num_classes, one_hot=one_hot, pipeline=pipeline)
    test_ds = make_dataset(data.x_test, data.y_test, config["eval_batch_size"], False, *stats,
                           num_classes=data.num_classes, one_hot=one_hot, pipeline=pipeline)
    return train_ds, test_ds


def keras_augment(config):
    return {**AUGMENT_PRESETS[config["augment"]], "mixup": config["mixup"], "cutmix": config["cutmix"]}


def _initialize_quantizers(model, train_ds):
    """First-batch quantizer initialisation outside `fit` (JAX's trainer would drop it)."""
    # BSQ's bit planes (a quantizer that holds its weight) never initialise from data
    if any(not q.holds_value for layer in quantized_layers(model) for q in layer.quantizers()):
        initialize_quantizers(model, next(iter(train_ds))[0])


def _set_precision_and_seed(config):
    keras.utils.set_random_seed(int(config["seed"]))
    policy = f"mixed_{config['mixed_precision']}" if config["mixed_precision"] else "float32"
    keras.mixed_precision.set_dtype_policy(policy)
    if config["deterministic"]:  # TF's op determinism (a no-op on the other backends)
        active_backend().enable_determinism()


def _tensorboard_available(verbose):
    """Keras' TensorBoard callback writes with `tensorflow.summary`: it needs both packages."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        tensorboard = None
    if tensorboard is None or not tensorflow_available():
        if verbose:
            print("quadkeras.train: TensorBoard logs skipped (Keras' TensorBoard callback needs "
                  "pip install tensorflow-cpu tensorboard)", flush=True)
        return False
    return True


def evaluate(config):
    """Evaluate a saved model (`checkpoint`, else work_dir/best.keras, else last.keras)."""
    config = resolve_config(config)
    work_dir = os.path.abspath(config["work_dir"])
    if config["checkpoint"]:
        found = config["checkpoint"]
        if not os.path.exists(found):
            raise ValueError(f"Invalid checkpoint={found!r}: file not found; pass an existing "
                             ".keras file or leave --checkpoint unset to use work_dir's model.")
    else:
        found = find_model_file(work_dir, "work_dir")
    data = _load(config)
    model = load_model(found, "checkpoint")
    acc = test_accuracy(model, data, config["eval_batch_size"], config["data_pipeline"])
    result = {"checkpoint": found, "test_acc": acc,
              "backend": keras.backend.backend(), "dataset": config["dataset"]}
    if os.path.isdir(work_dir):
        try:
            checkpoint.write_json(os.path.join(work_dir, checkpoint.EVAL), result)
        except OSError as err:  # a read-only finished run can still be evaluated
            if os_error_line(err) is None:
                raise
            print(f"quadkeras.evaluate: eval.json not written ({os_error_line(err)})", flush=True)
    return result


def test_accuracy(model, data, batch_size=512, pipeline="auto"):
    """Top-1 accuracy (a fraction) of `model` on `data`'s test split (the one place apps
    measure it; `data` as `load_run_data` returns it, `pipeline` a `data_pipeline` value)."""
    test_ds = make_dataset(data.x_test, data.y_test, batch_size, False, *input_stats(data, model),
                           pipeline=pipeline)
    logits = keras.ops.convert_to_numpy(model.predict(test_ds, verbose=0))
    return float((logits.argmax(-1) == data.y_test).mean())


def load_run_data(config):
    """The data a run with `config` trains and tests on (`max_train`, `val_fraction`, ...)."""
    return _load(resolve_config(config))


def _load(config):
    """`load_data` for the run, cut to seeded subsets of `max_train` / `max_test` examples.

    With `val_fraction` > 0, `data.x_val` / `data.y_val` hold that seeded fraction of the
    training split (`quadkeras.data.training_split`, seed = `seed`) and `x_train` the rest;
    otherwise they are None.
    """
    data = load_data(config["dataset"], config["data_dir"], config["cache_dir"])
    data.x_train, data.y_train, data.x_val, data.y_val = training_split(
        data.x_train, data.y_train, config["max_train"], config["val_fraction"], config["seed"])
    data.x_test, data.y_test = seeded_subset(data.x_test, data.y_test, config["max_test"])
    return data


def _steps_per_epoch(config, data):
    steps = len(data.x_train) // config["batch_size"]  # training drops the partial batch
    if steps == 0:
        raise ValueError(f"Invalid batch_size={config['batch_size']}: larger than the "
                         f"{len(data.x_train)} training examples (after max_train / val_fraction); "
                         "expected at most that many.")
    return steps


def _finished_summary(work_dir, config, epochs_done):
    """The saved summary of a run that already did all its epochs (resume is then a no-op)."""
    path = os.path.join(work_dir, checkpoint.SUMMARY)
    if epochs_done < config["epochs"] or not os.path.exists(path):
        return None
    if config["verbose"]:
        print(f"quadkeras.train: {work_dir} already finished {epochs_done} epochs; summary.json "
              "left as it was", flush=True)
    return checkpoint.read_json(path)


RESUME_HINT = ("restore this run's own file (and the model config file the run started from), "
               "or start a new --work_dir (nothing was overwritten)")


def _expected_model_config(config, data):
    """The model config this run builds (None for an `init_from` run, or when a model config
    file the run started from is gone: the identity `state.json` recorded still applies)."""
    if config["init_from"]:
        return None
    try:
        return model_config(config, data.input_shape, data.num_classes)
    except ValueError:
        return None


def _resumed_model(config, work_dir, data, steps_per_epoch):
    """(`last.keras` of the run in `work_dir`, epochs it completed), after checking that it is
    this run's model (`check_model_identity` against the model config the run builds and the
    identity `state.json` recorded; `best.keras` too) and that it holds optimizer state."""
    path = os.path.join(work_dir, checkpoint.LAST)
    state = checkpoint.read_json(os.path.join(work_dir, checkpoint.STATE))
    expected_config = _expected_model_config(config, data)
    best = os.path.join(work_dir, checkpoint.BEST)
    if os.path.exists(best):  # reads only the identity the file recorded
        with reading(best, "work_dir best", ".keras file"):
            check_model_identity(best, expected_config, state.get("model"), "work_dir best", RESUME_HINT)
    model = load_model(path, "work_dir last")
    check_model_identity(model, expected_config, state.get("model"), "work_dir last", RESUME_HINT)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            f"Invalid work_dir last={path!r}: it holds no optimizer state (saved uncompiled), so "
            "--resume cannot continue the run exactly; restore this run's own last.keras, or "
            "fine-tune its weights in a new run: --init_from=<that file> --work_dir=<new folder>.")
    epochs_done = int(keras.ops.convert_to_numpy(optimizer.iterations)) // steps_per_epoch
    if epochs_done < int(state.get("epoch") or 0):
        raise ValueError(
            f"Invalid work_dir last={path!r}: its optimizer state records {epochs_done} epochs of "
            f"{steps_per_epoch} steps but {checkpoint.STATE} records {state['epoch']} (optimizer "
            "state lost or another run's file); restore this run's own last.keras, or fine-tune "
            "its weights in a new run: --init_from=<that file> --work_dir=<new folder>.")
    return model, epochs_done


def _remeasure_best(work_dir, val_ds, epochs_done):
    """Re-measure `best.keras` when a kill left it without its own `best.json`."""
    if checkpoint.best_is_consistent(work_dir):
        return
    best = load_model(os.path.join(work_dir, checkpoint.BEST), "work_dir best")
    metric = best.evaluate(val_ds, verbose=0)[1]
    checkpoint.record_best(work_dir, metric, epochs_done)


def train(config=None, callbacks=None, stage=None, **overrides):
    """Train (or resume) a model; returns the summary dict also written to summary.json.

    `callbacks`: extra Keras callbacks, run after the checkpoint of each epoch is written.
    `stage`: a `RunStage` for a run that needs more than the plain loop (BSQ:
    `quadkeras.bsq.BSQ_STAGE`, or call `quadkeras.bsq.train_bsq`); None: the plain run.
    The work_dir is locked for the whole run (a second run on it fails at once). A Ctrl-C
    (KeyboardInterrupt) ends as `RunInterrupted`, whose message says which epoch the
    work_dir kept and that `resume=True` (`--resume`) continues from there.
    """
    config = resolve_config(config, **overrides)
    stage = stage or RunStage()
    stage.check(config)
    if config["evaluate_only"]:
        return evaluate(config)
    plan = make_plan(config)  # `distribute`: replicas, writer process (training/distribute.py)
    try:
        with CtrlCLatch() as ctrl_c, plan.scope(), open_plan_run(plan, config) as run:
            try:
                return _train(plan.run_config(config), run, list(callbacks or []), plan, ctrl_c, stage)
            except KeyboardInterrupt:  # it may have cut a write short: no orphan temp file
                clean_temp_files(run.work_dir)
                raise
    except KeyboardInterrupt as err:  # Ctrl-C: say what was kept and how to continue
        if isinstance(err, RunInterrupted):
            raise
        raise RunInterrupted(interrupted_run_line(config["work_dir"], config["epochs"])) from err


def _train(config, run, extra_callbacks, plan, ctrl_c, stage):
    start = time.perf_counter()
    work_dir = run.work_dir
    if config["verbose"]:
        print(f"quadkeras.train: backend={keras.backend.backend()} model={model_label(config)} "
              f"dataset={config['dataset']} work_dir={work_dir} ({plan.describe()})", flush=True)
    _set_precision_and_seed(config)
    data = _load(config)
    steps_per_epoch = _steps_per_epoch(config, data)
    plan.check_data(config, data)
    if run.resumed:
        model, epochs_done = _resumed_model(config, work_dir, data, steps_per_epoch)
        finished = _finished_summary(work_dir, config, epochs_done)
        if finished is not None:
            return finished
        # the resume command's --jit_compile, else the run's recorded one (not the file's)
        config = {**config, "jit_compile": run_jit_setting(
            config["jit_compile"], checkpoint.read_json(os.path.join(work_dir, checkpoint.STATE)))}
        apply_jit_compile(model, config["jit_compile"])
    else:
        config = {**config, "jit_compile": run_jit_setting(config["jit_compile"], None)}
        model = compile_model(initial_model(config, data, stage), config, steps_per_epoch)
        epochs_done = 0
    model = plan.prepare(model)
    # torch: layers called without Layer.__call__ (fast_forward.py); eager, that is the per-step
    # bookkeeping, compiled, ~3x less Python for dynamo to trace in the first step
    fast_torch_forward(model)
    history_csv = os.path.join(work_dir, checkpoint.HISTORY)
    trim_history(history_csv, epochs_done)
    callbacks = [NonFiniteGuard(work_dir)] if config["stop_on_nan"] else []
    callbacks = [CtrlCCheck(ctrl_c), *plan.callbacks(), *callbacks]
    callbacks += stage.callbacks(config)  # before the checkpoint writer and the loggers
    callbacks += [LearningRateLogger(), keras.callbacks.CSVLogger(history_csv, append=True)]
    if config["tensorboard"] and _tensorboard_available(config["verbose"]):
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(work_dir, checkpoint.TENSORBOARD),
                                                     write_graph=False, profile_batch=0))
    first_step = FirstStepTimer(config["verbose"])
    saver = CheckpointSaver(work_dir, resume_view(config),
                            runtime={"jit_compile": config["jit_compile"]})
    callbacks += [first_step, saver, *extra_callbacks, RunProgbar(config["epochs"])]
    train_time, last_val = 0.0, None
    has_val = data.x_val is not None  # else the test split is the validation data (seed recipe)
    fit_data = dataclasses.replace(data, x_test=data.x_val, y_test=data.y_val) if has_val else data
    stats = input_stats(data, model)
    if run.resumed:
        _remeasure_best(work_dir, datasets(config, fit_data, 0, stats)[1], epochs_done)
    for epoch in range(epochs_done, config["epochs"]):
        train_ds, val_ds = datasets(config, fit_data, epoch, stats)
        ctrl_c.check()  # a Ctrl-C while tf.data built the pipeline can be swallowed there
        if epoch == 0:
            _initialize_quantizers(model, train_ds)
        t0 = time.perf_counter()
        hist = model.fit(plan.process_batches(train_ds), validation_data=val_ds, initial_epoch=epoch, epochs=epoch + 1,
                         callbacks=callbacks, verbose=config["verbose"], shuffle=False)
        train_time += time.perf_counter() - t0
        last_val = hist.history["val_acc"][-1]
    if stage.measure_after_fit(config):  # BSQ search: re-quantized after the last validation
        last_val = None
    if last_val is None:
        last_val = model.evaluate(datasets(config, fit_data, 0, stats)[1], verbose=0)[1]
    test_acc = model.evaluate(datasets(config, data, 0, stats)[1], verbose=0)[1] if has_val else last_val
    epochs_run = config["epochs"] - epochs_done
    summary = run_summary(model, config, test_acc, checkpoint.best_metric(work_dir),
                          time.perf_counter() - start, train_time,
                          epochs_run * steps_per_epoch * config["batch_size"],
                          epochs_run, val_acc=last_val if has_val else None)
    summary["first_step_s"] = first_step.seconds  # compiling included (jit_compile)
    entry = stage.summary(model, config)
    if entry is not None:
        summary[stage.config_key] = entry
    checkpoint.write_json(os.path.join(work_dir, checkpoint.SUMMARY), summary)
    if config["verbose"]:
        print(f"quadkeras.train: test_acc={summary['test_acc']:.4f} best_acc={summary['best_acc']} "
              f"img/s={summary['img_per_s']} wall={summary['wall_time_s']}s", flush=True)
    return summary
