"""The compiled step of a training run: the `jit_compile` setting, its torch.compile mode, the
resume rule and the first-step timer.

`jit_compile` (config key and `--jit_compile`): `auto` | `true` | `false` | `reduce_overhead`.
`reduce_overhead` is torch only: `torch.compile(mode="reduce-overhead")`, i.e. inductor with
CUDA graphs, for static-shape training on a GPU (training drops the last partial batch, so
every train step has one shape); on a CPU inductor records no CUDA graph and it runs like
`true`. Unset (None): `auto` for a new run; a resumed run keeps the setting its `state.json`
recorded, and a value given on the resume command wins (`run_jit_setting`).

Example:

>>> resolve_jit_compile("false"), resolve_jit_compile("true")
(False, True)
>>> run_jit_setting(None, {"runtime": {"jit_compile": "true"}}), run_jit_setting("false", {})
('true', 'false')
"""

import time

import keras

from quadkeras.backend import active as active_backend

JIT_COMPILE = ("auto", "true", "false", "reduce_overhead")
TORCH_ONLY = {"reduce_overhead": "reduce-overhead"}  # setting -> torch.compile mode


def check_jit_backend(setting, backend=None):
    """One-line ValueError for a torch-only `jit_compile` on tensorflow / jax."""
    backend = backend or keras.backend.backend()
    if setting in TORCH_ONLY and backend != "torch":
        raise ValueError(f"Invalid jit_compile={setting!r} on the {backend} backend: CUDA graphs "
                         f"(torch.compile mode={TORCH_ONLY[setting]!r}) are torch only; expected "
                         "'auto', 'true' or 'false' (XLA / jax.jit there).")


def resolve_jit_compile(value):
    """The `jit_compile` `model.compile` gets for the config value `auto` | `true` | `false` |
    `reduce_overhead` (None = `auto`).

    `auto`: on torch, `torch.compile` (True) where a CUDA device is present, eager (False) on
    a CPU: there the compile costs minutes of first step and is slower wherever the step is
    compute-bound (docs/training.md, "Which backend and jit_compile"); on tensorflow and jax,
    Keras' own "auto" (XLA on a TensorFlow GPU, not on a CPU; `jax.jit` always).
    `reduce_overhead`: True (compiled; the mode comes from `torch_compile_mode`).

    >>> resolve_jit_compile("reduce_overhead"), resolve_jit_compile(None) in (True, False, "auto")
    (True, True)
    """
    value = "auto" if value is None else str(value).lower()
    value = {"auto": "auto", "true": True, "false": False, "reduce_overhead": True}[value]
    if value == "auto":  # torch: compiled where CUDA is (quadkeras.backend.torch.resolve_auto_jit)
        value = active_backend().resolve_auto_jit()
    return value


def torch_compile_mode(value):
    """The `torch.compile(mode=...)` of a `jit_compile` setting (None = torch's default)."""
    return TORCH_ONLY.get(str(value).lower())


def run_jit_setting(given, state):
    """The `jit_compile` setting a run uses: `given` (the config's value; None = not given)
    wins; else, for a resumed run, the one its `state` (state.json) recorded; else `auto`.

    A resume command that names `--jit_compile` changes it (it does not change the result, only
    the speed); one that does not keeps what the run was started with.
    """
    if given is not None:
        return str(given).lower()
    recorded = ((state or {}).get("runtime") or {}).get("jit_compile")
    return recorded if recorded in JIT_COMPILE else "auto"


def apply_jit_compile(model, setting):
    """Set a compiled model's step compilation to `setting` (a `JIT_COMPILE` value), as
    `model.compile(jit_compile=...)` would: for a model loaded from `last.keras` (its file
    holds the jit_compile it was saved with) and after `model.compile` (the torch mode).

    On torch with a compiled setting: `static_shape_torch_compile()`, and with a mode
    (`reduce_overhead`) the train/test/predict steps are compiled with that mode.
    """
    check_jit_backend(setting)
    jit = resolve_jit_compile(setting)
    if jit == "auto":  # tensorflow / jax: Keras' own rule (private), as `model.compile` applies it
        jit = model._resolve_auto_jit_compile()
    model.jit_compile = jit
    model.train_function = model.test_function = model.predict_function = None
    if jit is True:
        static_shape_torch_compile()  # a no-op but on torch
        mode = torch_compile_mode(setting)  # torch only (check_jit_backend)
        if mode:
            _compile_steps_with_mode(model, mode)
    return model


def _compile_steps_with_mode(model, mode):
    """Keras' torch trainer compiles its step functions with `torch.compile(fn)` and no mode:
    here Keras' `make_*_function` builds its eager step function (`jit_compile` off while it
    runs) and that is compiled with `mode`."""
    import torch

    for kind in ("train", "test", "predict"):
        attr, make = f"{kind}_function", getattr(type(model), f"make_{kind}_function")

        def make_compiled(force=False, attr=attr, make=make):
            if getattr(model, attr) is not None and not force:
                return getattr(model, attr)
            model.jit_compile = False
            try:
                make(model, force)
            finally:
                model.jit_compile = True
            setattr(model, attr, torch.compile(getattr(model, attr), mode=mode))
            return getattr(model, attr)

        setattr(model, f"make_{kind}_function", make_compiled)
    model.torch_compile_mode = mode


def static_shape_torch_compile():
    """Dynamo settings for torch.compile of a Keras model (call before `model.compile(...,
    jit_compile=True)` on the torch backend; `compile_model` does): static shapes, one cache
    entry per layer shape, Keras' op-name counter traced as a constant. The settings live in
    `quadkeras.backend.torch.prepare_jit_compile` (a no-op on the other backends)."""
    active_backend().prepare_jit_compile()


class FirstStepTimer(keras.callbacks.Callback):
    """Seconds of the run's first train step (with `jit_compile`, the compilation; later
    epochs reuse it): printed once (verbose) and kept in `seconds`."""

    def __init__(self, verbose=1):
        super().__init__()
        self.verbose, self.seconds, self._start = verbose, None, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.seconds is None and self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds is None and self._start is not None:
            self.seconds = round(time.perf_counter() - self._start, 3)
            if self.verbose:
                print(f"\nquadkeras.train: first train step {self.seconds} s (jit_compile="
                      f"{self.model.jit_compile}: compiling included)", flush=True)
