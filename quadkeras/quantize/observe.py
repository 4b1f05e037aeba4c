"""One observer path for data-driven quantizer parameters.

Every data-driven range is set the same way: observe a batch, turn what was seen into
parameter values, set them with `Quantizer.initialize` (which records the quantizer
initialised, `init_state`). The first training batch does it inside the quantizer's call
(`Quantizer.data_init_values`, traced); `quadkeras.quantize.initialize_quantizers` runs that
first batch eagerly before `fit`. Post-training calibration
(`quadkeras.quantize.calibration.calibrate`), LSQ's MSE step init
(`quadkeras.quantize.lsq_init.mse_init_lsq`) and export's branch ranges
(`quadkeras.export.quad_qat`) observe many batches, here once:

1. `observe(model, images, observers)`: run the model at inference over `images` in batches
   while chosen quantizers hand their (prepared) input to an observer and pass it through
   unquantized (`Quantizer.observer`), so every observer sees the float activations (a
   quadratic layer, given instead of a quantizer, hands over its fused linear output through
   `fused_output_hook`); `MinMax` accumulates a range;
2. the caller turns what was observed into parameter values;
3. `set_parameters(quantizer, name=value, ...)`: `Quantizer.initialize` with them, so
   training keeps them.

Example:

>>> import numpy as np, keras
>>> from quadkeras.quantize import QuantizeWrapper
>>> wrapper = QuantizeWrapper(keras.layers.Dense(2), input_quantizer="fakequant:8")
>>> m = keras.Sequential([keras.Input((4,)), wrapper])
>>> seen = MinMax()
>>> observe(m, np.arange(12, dtype="float32").reshape(3, 4), [(wrapper.input_quantizer, lambda q, x: seen.update(x))])
>>> seen.lo, seen.hi
(0.0, 11.0)
>>> set_parameters(wrapper.input_quantizer, min=seen.lo, max=seen.hi)
>>> wrapper.input_quantizer.awaiting_data_init, wrapper.input_quantizer.init_state
(False, 'initialized')
"""

import numpy as np
from keras import ops


def run_inference(model, images, batch_size=100):
    """Call `model` at inference (`training=False`) on `images` (float32), `batch_size` at a time."""
    images = np.asarray(images, "float32")
    for start in range(0, len(images), batch_size):
        model(images[start:start + batch_size], training=False)


def _tap(target):
    """The attribute through which `target` hands a tensor to an observer: a quantizer's
    `observer` (`fn(quantizer, x)`), a quadratic layer's `fused_output_hook` (`fn(z, index)`,
    returns the tensor to use)."""
    return "fused_output_hook" if hasattr(target, "fused_output_hook") else "observer"


def observe(model, images, observers, batch_size=100):
    """Run `model` at inference over `images`; each `(target, fn)` of `observers` hands its
    tensor to `fn` (see `_tap`): a quantizer calls `fn(quantizer, x)` with its input instead of
    quantizing it. Observers are removed after, also on an error."""
    observers = list(observers)
    try:
        for target, fn in observers:
            setattr(target, _tap(target), fn)
        run_inference(model, images, batch_size)
    finally:
        for target, _ in observers:
            setattr(target, _tap(target), None)


def finite_values(x):
    """The finite values of tensor `x`, flat, float64 (a NaN / inf never becomes a range)."""
    values = np.asarray(ops.convert_to_numpy(x), "float64").reshape(-1)
    return values[np.isfinite(values)]


class MinMax:
    """The running range [lo, hi] of the finite values `update` saw ((inf, -inf) before any)."""

    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf

    def update(self, x):
        """Widen the range to `x`'s finite values; returns them (flat float64)."""
        values = finite_values(x)
        if values.size:
            self.lo, self.hi = min(self.lo, float(values.min())), max(self.hi, float(values.max()))
        return values


def set_parameters(quantizer, **values):
    """Set a quantizer's parameters (`quantizer.params`) to `values` ({parameter name: value}; a
    single number fills the parameter, other values are reshaped to it) through
    `Quantizer.initialize`, which records the quantizer initialised."""
    arrays = {}
    for name, value in values.items():
        shape = tuple(quantizer.params[name].shape)
        value = np.asarray(value, "float32")
        arrays[name] = np.full(shape, value.item(), "float32") if value.size == 1 else value.reshape(shape)
    quantizer.initialize(arrays)
