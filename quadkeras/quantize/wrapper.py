"""`QuantizeWrapper`: run a layer with a quantized kernel, input and (optionally) output.

Works on every layer `quadkeras.layers.kernel_call` supports (keras `Conv2D`,
`DepthwiseConv2D`, `Dense` and the quadkeras quadratic layers), through its
`call_with_kernel`. Each quantizer is a sublayer named after its slot that owns its
variables (`conv1/kernel/step`, `conv1/input/alpha`, ...), so they save, load and train with
the model; the wrapped layer keeps its own variables (`.layer`). Files written before
quantizers owned their variables load too (`quadkeras.quantizers.hosting`). Depthwise kernels `(kh, kw, C, M)` are seen by the
kernel quantizer as `(kh, kw, 1, C·M)`, so "per channel" means per output channel. For
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
from quadkeras.layers.kernel_call import QUAD_LAYERS, SUPPORTED, call_with_kernel
from quadkeras.layers.kernel_call import supports_kernel_call as is_quantizable
from quadkeras.quantizers.hosting import load_host_variables, quantizers_first
from quadkeras.quantizers.spec import clone, deserialize, serialize

# the quantizer slots, in the order `build` creates them (older files list their variables so)
SLOTS = ("input", "kernel", "output", "branch", "product")


@keras.saving.register_keras_serializable(package="quadkeras")
class QuantizeWrapper(keras.layers.Wrapper):
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
    """

    def __init__(self, layer, kernel_quantizer=None, input_quantizer=None, output_quantizer=None,
                 branch_quantizer=None, product_quantizer=None, **kwargs):
        if not is_quantizable(layer):
            names = ", ".join(cls.__name__ for cls in SUPPORTED)
            raise ValueError(f"Invalid layer {type(layer).__name__} ('{layer.name}') for "
                             f"QuantizeWrapper: expected one of {names}.")
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        given = {"input": input_quantizer, "kernel": kernel_quantizer, "output": output_quantizer,
                 "branch": branch_quantizer, "product": product_quantizer}
        for slot in SLOTS:
            setattr(self, f"{slot}_quantizer", clone(deserialize(given[slot]), name=slot))
        if self.product_quantizer is not None and not isinstance(layer, QUAD_LAYERS):
            raise ValueError(f"Invalid product_quantizer for {type(layer).__name__} ('{layer.name}'): "
                             f"expected a quadratic layer ({', '.join(c.__name__ for c in QUAD_LAYERS)}).")
        if self.branch_quantizer is not None and not isinstance(layer, QUAD_LAYERS):
            raise ValueError(f"Invalid branch_quantizer for {type(layer).__name__} ('{layer.name}'): "
                             f"expected a quadratic layer ({', '.join(c.__name__ for c in QUAD_LAYERS)}).")
        for q, role in ((self.kernel_quantizer, "weight"), (self.input_quantizer, "activation"),
                        (self.output_quantizer, "activation"), (self.branch_quantizer, "activation"),
                        (self.product_quantizer, "activation")):
            if q is not None and q.role is None:
                q.role = role
        quantizers_first(self, self._built_order())

    # -------------------------------------------------------------------- build
    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        if self.input_quantizer is not None:
            self.input_quantizer.build(input_shape)
        if self.kernel_quantizer is not None:
            self.kernel_quantizer.build_from_value(self._kernel_view(self.layer.kernel))
        if self.output_quantizer is not None:
            self.output_quantizer.build(self.compute_output_shape(input_shape))
        if self.branch_quantizer is not None:
            out = tuple(self.compute_output_shape(input_shape))
            self.branch_quantizer.build(out[:-1] + (self.layer.num_branches * self.layer.units_per_branch,))
        if self.product_quantizer is not None:
            self.product_quantizer.build(self.compute_output_shape(input_shape))
        self.built = True

    def _built_order(self):
        return [q for q in (getattr(self, f"{slot}_quantizer") for slot in SLOTS) if q is not None]

    def load_own_variables(self, store):
        load_host_variables(self, store, self._built_order())

    def _is_depthwise(self):
        return isinstance(self.layer, (keras.layers.DepthwiseConv2D, QuadDepthwiseConv2D))

    def _kernel_view(self, kernel):
        kernel = ops.convert_to_tensor(kernel)
        if self._is_depthwise():
            kh, kw, c, m = kernel.shape
            return ops.reshape(kernel, (kh, kw, 1, c * m))
        return kernel

    def _kernel_unview(self, kernel):
        return ops.reshape(kernel, self.layer.kernel.shape) if self._is_depthwise() else kernel

    # --------------------------------------------------------------------- call
    def call(self, inputs, training=None):
        x = inputs
        if self.input_quantizer is not None:
            x = self.input_quantizer(x, training=training)
        kernel = ops.convert_to_tensor(self.layer.kernel)
        if self.kernel_quantizer is not None:
            kernel = self._kernel_unview(self.kernel_quantizer(self._kernel_view(kernel), training=training))
        y = ops.cast(self._forward(x, kernel, training), self.compute_dtype)
        if self.output_quantizer is not None:
            y = self.output_quantizer(y, training=training)
        return y

    def _forward(self, x, kernel, training):
        return call_with_kernel(self.layer, x, kernel, training, self.branch_quantizer,
                                self.product_quantizer, compute_dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ----------------------------------------------------------------- metadata
    def quantizers(self):
        """The wrapper's quantizers (kernel, input, output, branch, product), those that are set."""
        return [q for q in (self.kernel_quantizer, self.input_quantizer, self.output_quantizer,
                            self.branch_quantizer, self.product_quantizer) if q is not None]

    def quantization_bits(self):
        """{"weight": kernel bits or None, "activation": input bits or None}."""
        bits = lambda q: None if q is None else q.bits  # noqa: E731
        return {"weight": bits(self.kernel_quantizer), "activation": bits(self.input_quantizer)}

    def quantized_kernel(self):
        """The kernel as the wrapped layer sees it at inference (NumPy)."""
        kernel = ops.convert_to_tensor(self.layer.kernel)
        if self.kernel_quantizer is not None:
            kernel = self._kernel_unview(self.kernel_quantizer(self._kernel_view(kernel), training=False))
        return ops.convert_to_numpy(kernel)

    def get_config(self):
        config = super().get_config()
        config.update({
            "kernel_quantizer": serialize(self.kernel_quantizer),
            "input_quantizer": serialize(self.input_quantizer),
            "output_quantizer": serialize(self.output_quantizer),
            "branch_quantizer": serialize(self.branch_quantizer),
            "product_quantizer": serialize(self.product_quantizer),
        })
        return config
