"""The jax backend's hooks: tracer detection, XLA's select fusion, matmul precision.

Each function replaces the default of the same name in `quadkeras.backend.generic` (see
there for the contract); `quadkeras.backend.active()` returns this module on jax.

Example:

>>> is_concrete(jax.numpy.ones(2))
True
"""

import contextlib

import jax
import keras

from quadkeras.backend.generic import *  # noqa: F403 (the defaults this module keeps)
from quadkeras.backend.generic import __all__  # noqa: F401

SELECT_FORM_FUSES = True


def process_index():
    """`jax.process_index()` (0 outside `jax.distributed`)."""
    return jax.process_index()


def is_concrete(x):
    """False for a `jax.core.Tracer` (inside `jax.jit`), also held by a Keras variable."""
    value = x.value if isinstance(x, keras.Variable) else x
    return not isinstance(value, jax.core.Tracer)


@contextlib.contextmanager
def float32_precision():
    """`jax.default_matmul_precision("float32")` inside the block."""
    with jax.default_matmul_precision("float32"):
        yield
