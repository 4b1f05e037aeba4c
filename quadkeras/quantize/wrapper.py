"""`QuantizeWrapper`: run a layer with a quantized kernel, input and (optionally) output.

Works on every layer `quadkeras.layers.kernel_call` supports (keras `Conv2D`,
`DepthwiseConv2D`, `Dense` and the quadkeras quadratic layers), through its
`call_with_kernel`. Each quantizer is a sublayer named after its slot that owns its
variables (`conv1/kernel/step`, `conv1/input/alpha`, ...), so they save, load and train with
the model; the wrapped layer keeps its own variables (`.layer`). Construction, config, save
and load (files written before quantizers owned their variables included) are
`quadkeras.quantizers.hosting.QuantizerHost`'s; this class declares its slots and how each is built
and called. Depthwise kernels `(kh, kw, C, M)` are seen by the kernel quantizer as `(kh, kw, 1, C·M)`, so "per channel" means per output channel. For
quadratic layers the kernel quantizer sees the fused kernel (per-channel = per fused output
channel); `t1`'s `linear_kernel` stays float.

Mixed precision follows Keras' layer contract with the *wrapper's* dtype policy (default: the
wrapped layer's policy): inputs are cast to the wrapper's `compute_dtype`, the keras conv/dense
math and the output are in that dtype, and every variable (quantizer parameters included)
stays in `variable_dtype`. Quadratic layers run their own `call_with_kernel` (in their own
compute dtype, the wrapper's by default); the result is cast to the wrapper's.

Example:

>>> import numpy as np, keras
>>> w = QuantizeWrapper(keras.layers.Dense(3), kernel_quantizer="lsq:4", input_quantizer="lsq:4")
>>> tuple(w(np.ones((2, 5), "float32")).shape)
(2, 3)
>>> w.quantization_bits()
{'weight': 4, 'activation': 4}
"""

import keras
from keras import ops

from quadkeras.layers import QuadDepthwiseConv2D
from quadkeras.layers.kernel_call import FIRST_ORDER_LAYERS, QUAD_LAYERS, SUPPORTED, call_with_kernel
from quadkeras.layers.kernel_call import supports_kernel_call as is_quantizable
from quadkeras.quantizers.hosting import QuantizerHost, Slot


@keras.saving.register_keras_serializable(package="quadkeras")
class QuantizeWrapper(QuantizerHost):
    """Fake-quantize a layer's kernel, input and output during training and inference.

    Args:
        layer: a `Conv2D`, `DepthwiseConv2D`, `Dense`, `QuadConv2D`, `QuadDense` or
            `QuadDepthwiseConv2D` (built or not).
        kernel_quantizer, input_quantizer, output_quantizer: anything
            `quadkeras.quantizers.get` accepts, or None (no quantization there). Each is
            copied, so one spec object can be given to many wrappers.
        branch_quantizer: quadratic layers (`ours`, `t2`, `t3`, `t4`) only: quantizer of
            the fused linear output (after the per-branch BN), before the branches are
            multiplied. int8 QAT needs it: at export that output is the int8 conv's output.
        product_quantizer: quadratic layers with a branch product (`ours`, `t3`, `t4`,
            `t2_4`) only: quantizer of the product before the linear branch is added, so
            the exported MUL and ADD run in int8 too.
        bias_quantizer: `Conv2D`, `DepthwiseConv2D` and `Dense` with a bias only: quantizer
            of the bias (e.g. BSQ's bit-form bias, `"bsq:8"`).

    A quantizer that holds the weight itself (`Quantizer.holds_value`, BSQ's `BitPlanes`)
    replaces the layer's kernel (bias): that variable is frozen, and the quantizer's output is
    what the layer computes with. A quadratic layer's branch channels are handed to a kernel
    quantizer that has a `branch_index` attribute before it is built.
    """

    SLOTS = (Slot("kernel", "weight"), Slot("input", "activation"), Slot("output", "activation"),
             Slot("branch", "activation"), Slot("product", "activation"), Slot("bias", "weight"))
    VARIABLE_ORDER = ("input", "kernel", "output", "branch", "product", "bias")  # older files list them so
    QUAD_ONLY = ("product", "branch")  # slots of quadratic layers only

    def __init__(self, layer, *quantizers, **kwargs):
        if not is_quantizable(layer):
            names = ", ".join(cls.__name__ for cls in SUPPORTED)
            raise ValueError(f"Invalid layer {type(layer).__name__} ('{layer.name}') for "
                             f"QuantizeWrapper: expected one of {names}.")
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, *quantizers, **kwargs)

    def check_slots(self, layer, given):
        for slot in self.QUAD_ONLY:
            if given[slot] is not None and not isinstance(layer, QUAD_LAYERS):
                raise ValueError(f"Invalid {slot}_quantizer for {type(layer).__name__} ('{layer.name}'): "
                                 f"expected a quadratic layer ({', '.join(c.__name__ for c in QUAD_LAYERS)}).")
        if given["bias"] is not None and not (isinstance(layer, FIRST_ORDER_LAYERS) and layer.use_bias):
            raise ValueError(f"Invalid bias_quantizer for {type(layer).__name__} ('{layer.name}'): expected a "
                             "Conv2D, DepthwiseConv2D or Dense layer with a bias.")

    # -------------------------------------------------------------------- build
    def build_slot(self, slot, quantizer, input_shape):
        if slot == "input":
            quantizer.build(input_shape)
        elif slot == "kernel":
            if hasattr(quantizer, "branch_index") and isinstance(self.layer, QUAD_LAYERS):
                quantizer.branch_index = [list(map(int, i)) for i in self.layer._kernel_branch_index]
            quantizer.build_from_value(self._kernel_view(self.layer.kernel))
            if quantizer.holds_value:
                self.layer.kernel.trainable = False
        elif slot == "bias":
            quantizer.build_from_value(self.layer.bias)
            if quantizer.holds_value:
                self.layer.bias.trainable = False
        elif slot == "branch":
            out = tuple(self.compute_output_shape(input_shape))
            quantizer.build(out[:-1] + (self.layer.num_branches * self.layer.units_per_branch,))
        else:  # output, product
            quantizer.build(self.compute_output_shape(input_shape))

    def _is_depthwise(self):
        return isinstance(self.layer, (keras.layers.DepthwiseConv2D, QuadDepthwiseConv2D))

    def _views_kernel(self):
        """True when the kernel quantizer sees a depthwise kernel as (kh, kw, 1, C*M)."""
        return self._is_depthwise() and (self.kernel_quantizer is None or self.kernel_quantizer.kernel_view)

    def _kernel_view(self, kernel):
        kernel = ops.convert_to_tensor(kernel)
        if self._views_kernel():
            kh, kw, c, m = kernel.shape
            return ops.reshape(kernel, (kh, kw, 1, c * m))
        return kernel

    def _kernel_unview(self, kernel):
        return ops.reshape(kernel, self.layer.kernel.shape) if self._views_kernel() else kernel

    # --------------------------------------------------------------------- call
    def call(self, inputs, training=None):
        x = inputs
        if self.input_quantizer is not None:
            x = self.input_quantizer(x, training=training)
        y = ops.cast(self._forward(x, self._kernel(training), training), self.compute_dtype)
        if self.output_quantizer is not None:
            y = self.output_quantizer(y, training=training)
        return y

    def _kernel(self, training):
        """The kernel the wrapped layer computes with (a tensor)."""
        kernel = ops.convert_to_tensor(self.layer.kernel)
        if self.kernel_quantizer is None:
            return kernel
        return self._kernel_unview(self.kernel_quantizer(self._kernel_view(kernel), training=training))

    def _forward(self, x, kernel, training):
        bias = None if self.bias_quantizer is None else self.bias_quantizer(self.layer.bias, training=training)
        return call_with_kernel(self.layer, x, kernel, training, self.branch_quantizer,
                                self.product_quantizer, compute_dtype=self.compute_dtype, bias=bias)

    # ----------------------------------------------------------------- metadata
    def quantized_kernel(self):
        """The kernel as the wrapped layer sees it at inference (NumPy, like every host's)."""
        return ops.convert_to_numpy(self._kernel(training=False))
