"""The one place that knows which Keras backend runs, and the one place that calls private
Keras API.

- `quadkeras.backend.active()`: the module of the running backend (`quadkeras.backend.torch`,
  `.tensorflow`, `.jax`; `.generic` for the others), each with the same hooks (native BatchNorm /
  conv / LSQ kernels, replicas, optimizer kernels, compiler settings, TF32 control); a hook
  that returns None or False asks the caller to run its `keras.ops` path.
- `quadkeras.backend.keras_private`: every private Keras attribute or module quadkeras
  reads, each behind one named function.

`tests/test_backend_package.py` imports all of them on each backend and calls each private
accessor on a tiny model, so a Keras upgrade fails there first.

Example:

>>> import keras
>>> from quadkeras import backend
>>> backend.name() == keras.backend.backend()
True
>>> backend.active().replicas_in_sync()
1
"""

import importlib

import keras

BACKENDS = ("tensorflow", "torch", "jax")
_ACTIVE = {}


def name():
    """The running Keras backend's name (`keras.backend.backend()`)."""
    return keras.backend.backend()


def active():
    """The hooks module of the running Keras backend (imported on first use)."""
    current = name()
    module = _ACTIVE.get(current)
    if module is None:
        target = current if current in BACKENDS else "generic"
        module = _ACTIVE[current] = importlib.import_module(f"quadkeras.backend.{target}")
    return module
