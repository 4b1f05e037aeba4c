"""Whether a value can be read now, or is symbolic (inside a traced / compiled function).

Layers that keep Python-side state in step with a variable (a quantizer's "data-dependent
parameters are initialised" switch) may read the variable only where it holds a concrete
value: eager TensorFlow, eager torch (not under `torch.compile`), JAX outside `jit`. This
module is the one place that asks each backend.

Example:

>>> import numpy as np
>>> concrete_value(np.float32(1.0))
1.0
"""

from keras import ops

from quadkeras import backend


def is_concrete(x):
    """True when `x` (a tensor or variable) has a value that can be read without tracing."""
    return backend.active().is_concrete(x)


def concrete_value(x):
    """`x` as a Python float when it is concrete (see `is_concrete`), else None."""
    if not is_concrete(x):
        return None
    return float(ops.convert_to_numpy(x))
