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

import keras
from keras import ops


def in_torch_compile():
    """True while `torch.compile` (dynamo) traces the code that asks; False elsewhere."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return torch.compiler.is_compiling()


def is_concrete(x):
    """True when `x` (a tensor or variable) has a value that can be read without tracing."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "torch":
        import torch

        on_meta = isinstance(x, torch.Tensor) and x.device.type == "meta"  # Keras' shape inference
        return not (on_meta or in_torch_compile())
    if backend == "jax":
        import jax

        value = x.value if isinstance(x, keras.Variable) else x
        return not isinstance(value, jax.core.Tracer)
    return True


def concrete_value(x):
    """`x` as a Python float when it is concrete (see `is_concrete`), else None."""
    if not is_concrete(x):
        return None
    return float(ops.convert_to_numpy(x))
