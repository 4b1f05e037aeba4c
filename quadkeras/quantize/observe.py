"""One observer path for data-driven quantizer parameters.

Post-training calibration (`quadkeras.quantize.calibration.calibrate`) and LSQ's MSE step init
(`quadkeras.quantize.lsq_init.mse_init_lsq`) do the same three things, here once:

1. `observe(model, images, observers)`: run the model at inference over `images` in batches
   while chosen quantizers hand their (prepared) input to an observer and pass it through
   unquantized (`Quantizer.observer`), so every observer sees the float activations;
2. the caller turns what was observed into parameter values;
3. `set_parameters(quantizer, name=value, ...)`: assign them and record the quantizer as
   initialised (`Quantizer.mark_initialized`), so the first training batch keeps them.

Example:

>>> import numpy as np, keras
>>> from quadkeras.quantize import QuantizeWrapper
>>> wrapper = QuantizeWrapper(keras.layers.Dense(2), input_quantizer="fakequant:8")
>>> m = keras.Sequential([keras.Input((4,)), wrapper])
>>> seen = []
>>> observe(m, np.ones((3, 4), "float32"), [(wrapper.input_quantizer, lambda q, x: seen.append(x.shape))])
>>> [tuple(s) for s in seen]
[(3, 4)]
>>> set_parameters(wrapper.input_quantizer, min=-1.0, max=1.0)
>>> wrapper.input_quantizer.awaiting_data_init
False
"""

import numpy as np


def run_inference(model, images, batch_size=100):
    """Call `model` at inference (`training=False`) on `images` (float32), `batch_size` at a time."""
    images = np.asarray(images, "float32")
    for start in range(0, len(images), batch_size):
        model(images[start:start + batch_size], training=False)


def observe(model, images, observers, batch_size=100):
    """Run `model` at inference over `images`; each `(quantizer, fn)` of `observers` calls
    `fn(quantizer, x)` with its input instead of quantizing it. Observers are removed after."""
    observers = list(observers)
    try:
        for quantizer, fn in observers:
            quantizer.observer = fn
        run_inference(model, images, batch_size)
    finally:
        for quantizer, _ in observers:
            quantizer.observer = None


def set_parameters(quantizer, **values):
    """Assign `values` ({parameter name: value}) to a quantizer's parameters (`quantizer.params`;
    a single number fills the parameter, other values are reshaped to it) and mark the quantizer
    initialised."""
    for name, value in values.items():
        var = quantizer.params[name]
        value = np.asarray(value, "float32")
        var.assign(np.full(var.shape, value.item(), "float32") if value.size == 1 else value.reshape(var.shape))
    quantizer.mark_initialized()
