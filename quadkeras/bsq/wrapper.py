"""`BitQuantWrapper`: a layer's kernel in BSQ bit representation (or fixed-scheme float).

representation="bits" (BSQ training): trainable positive / negative bit planes
`pos_planes`, `neg_planes` (kernel.shape + (bits,), values kept in [0, 2]) and a trainable
`scale`; the kernel is `scale * STE_round_n(sum_b (P_b - N_b) 2^b / (2^n - 1))`, where the
current precision n (<= bits) lives in the non-trainable variable `precision`. The
layer adds its weighted bit-level group Lasso, `reg_strength * #params * n * sum_b ||b||`,
with `add_loss` (`reg_strength` = alpha / total params is set by `set_bsq_decay`).

representation="float" (finetune with the scheme fixed, BSQ's `to_finetune`): a
trainable normalised kernel `norm_kernel` in [-1, 1] quantized with STE to n bits.

The BSQ variables are never autocast: under mixed precision the kernel is reconstructed in
float32 and cast to the compute dtype only for the conv / matmul.

`quantize_bias=True` (BSQ's `--bin` biases; first-order layers with a bias) holds the bias
the same way (`pos_bias_planes`, `neg_bias_planes` / `norm_bias`, `bias_scale`,
`bias_precision`), regularised with weight #bias * n_bias and re-quantized like the kernel.

The inner layer's own `kernel` is frozen (not trained) and refreshed with the represented
kernel by `sync_inner_kernel()`. Precision is stored in a variable, so the scheme survives
`.keras` save/load.

Example:

>>> import keras
>>> layer = BitQuantWrapper(keras.layers.Dense(4), bits=8)
>>> y = layer(keras.ops.ones((2, 3)))
>>> layer.quantization_bits()
{'weight': 8, 'activation': None}
"""

import numpy as np
import keras
from keras import ops

from quadkeras.bsq import bitplanes
from quadkeras.bsq.kernel_ops import bit_group_lasso, reconstruct, ste_quantize
from quadkeras.layers.kernel_call import FIRST_ORDER_LAYERS, call_with_kernel
from quadkeras.utils.validation import check_choice, check_int_range

REPRESENTATIONS = ("bits", "float")
# variable names of each quantized tensor: positive / negative planes, float form, scale, precision
PART_VARIABLES = {"kernel": ("pos_planes", "neg_planes", "norm_kernel", "scale", "precision"),
                  "bias": ("pos_bias_planes", "neg_bias_planes", "norm_bias", "bias_scale", "bias_precision")}


@keras.saving.register_keras_serializable(package="quadkeras")
class ClipConstraint(keras.constraints.Constraint):
    """Clip a variable to [low, high] after every optimizer step."""

    def __init__(self, low, high):
        self.low = float(low)
        self.high = float(high)

    def __call__(self, w):
        return ops.clip(w, self.low, self.high)

    def get_config(self):
        return {"low": self.low, "high": self.high}


@keras.saving.register_keras_serializable(package="quadkeras")
class BitQuantWrapper(keras.layers.Wrapper):
    """Weights of `layer` (Conv2D, DepthwiseConv2D, Dense, QuadConv2D/Dense/Depthwise) in BSQ form.

    Args:
        layer: the layer to wrap (its `kernel` is replaced; bias / BN stay float).
        bits: number of bit planes (the starting and maximum precision), 1..16.
        representation: `"bits"` (trainable bit planes) or `"float"` (fixed-scheme finetune).
        quantize_bias: also hold the bias in BSQ form (first-order layers; ignored without a bias).
    """

    def __init__(self, layer, bits=8, representation="bits", quantize_bias=False, **kwargs):
        super().__init__(layer, **kwargs)
        self.bits = check_int_range("bits", int(bits), 1, bitplanes.MAX_BITS)
        self.representation = check_choice("representation", representation, REPRESENTATIONS)
        self.quantize_bias = bool(quantize_bias)
        if self.quantize_bias and not isinstance(layer, FIRST_ORDER_LAYERS):
            raise ValueError(f"Invalid quantize_bias=True for layer {layer.name!r} ({type(layer).__name__}): "
                             "expected a Conv2D, DepthwiseConv2D or Dense layer.")
        self.parts = ["kernel"]

    def _var(self, part, index):
        return getattr(self, PART_VARIABLES[part][index])

    def _add_part(self, part, shape):
        pos, neg, norm, scale, precision = PART_VARIABLES[part]
        if self.representation == "bits":
            clip = ClipConstraint(0.0, 2.0)
            for name in (pos, neg):
                setattr(self, name, self.add_weight(name=name, shape=shape + (self.bits,), initializer="zeros",
                                                    constraint=clip, autocast=False))
        else:
            setattr(self, norm, self.add_weight(name=norm, shape=shape, initializer="zeros",
                                                constraint=ClipConstraint(-1.0, 1.0), autocast=False))
        setattr(self, scale, self.add_weight(name=scale, shape=(), initializer="ones", autocast=False))
        setattr(self, precision, self.add_weight(name=precision, shape=(), trainable=False, autocast=False,
                                                 initializer=keras.initializers.Constant(float(self.bits))))

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = getattr(self.layer, "kernel", None)
        if kernel is None:
            raise ValueError(f"Invalid layer {self.layer.name!r}: BitQuantWrapper needs a layer with a `kernel`.")
        kernel.trainable = False  # the wrapper owns the trainable kernel representation
        self._add_part("kernel", tuple(kernel.shape))
        self.reg_strength = self.add_weight(name="reg_strength", shape=(), trainable=False,
                                            initializer="zeros", autocast=False)
        if self.quantize_bias and getattr(self.layer, "bias", None) is not None:
            self.layer.bias.trainable = False
            self._add_part("bias", tuple(self.layer.bias.shape))
            self.parts = ["kernel", "bias"]
        self.built = True
        initial = {part: ops.convert_to_numpy(getattr(self.layer, part)) for part in self.parts}
        for part in self.parts:
            self.set_kernel(initial[part], self.bits, part=part)

    # ------------------------------------------------------------------ forward
    def normalized_kernel(self, part="kernel"):
        """Kernel (or bias) / scale on the n-bit grid (STE rounding), as a tensor."""
        if self.representation == "bits":
            raw = reconstruct(self._var(part, 0), self._var(part, 1), self._var(part, 4))
        else:
            raw = self._var(part, 2)
        return ste_quantize(raw, self._var(part, 4))

    def quantized_kernel(self, part="kernel"):
        return self.normalized_kernel(part) * self._var(part, 3)

    def regularization(self):
        """reg_strength * sum over kernel (and bias) of #params * precision * bit-level group Lasso."""
        if self.representation != "bits":
            return ops.zeros(())
        total = ops.zeros(())
        for part in self.parts:
            pos, neg, precision = self._var(part, 0), self._var(part, 1), self._var(part, 4)
            lasso = bit_group_lasso(pos, neg, precision)
            total = total + float(np.prod(pos.shape[:-1])) * ops.cast(precision, lasso.dtype) * lasso
        return self.reg_strength * total

    def call(self, inputs, training=None):
        if self.representation == "bits" and training:
            self.add_loss(self.regularization())
        bias = self.quantized_kernel("bias") if "bias" in self.parts else None
        return call_with_kernel(self.layer, inputs, self.quantized_kernel(), training=training, bias=bias)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ------------------------------------------------------- NumPy state access
    @property
    def num_params(self):
        return int(np.prod(self.layer.kernel.shape))

    @property
    def bias_params(self):
        """Number of bit-quantized bias values (0 unless `quantize_bias`)."""
        return int(np.prod(self.layer.bias.shape)) if "bias" in self.parts else 0

    def current_precision(self, part="kernel"):
        return int(round(float(ops.convert_to_numpy(self._var(part, 4)))))

    def quantization_bits(self):
        return {"weight": self.current_precision(), "activation": None}

    def _planes(self, part):
        return ops.convert_to_numpy(self._var(part, 0)), ops.convert_to_numpy(self._var(part, 1))

    def get_codes(self, part="kernel"):
        """(integer codes, scale, precision) of the current kernel / bias (re-quantized, exact)."""
        n = self.current_precision(part)
        if self.representation == "bits":
            codes = bitplanes.planes_to_codes(*self._planes(part), n)
        else:
            norm = np.clip(ops.convert_to_numpy(self._var(part, 2)).astype("float64"), -1.0, 1.0)
            codes = np.rint(norm * bitplanes.levels(n)).astype("int64")
        return codes, float(ops.convert_to_numpy(self._var(part, 3))), n

    def set_codes(self, codes, scale, precision, part="kernel"):
        """Set the exact representation `scale * codes / (2^precision - 1)`."""
        precision = check_int_range("precision", int(precision), 1, self.bits)
        codes = np.asarray(codes, dtype="int64")
        if self.representation == "bits":
            pos, neg = bitplanes.codes_to_planes(codes, self.bits)
            self._var(part, 0).assign(pos)
            self._var(part, 1).assign(neg)
        else:
            self._var(part, 2).assign((codes / bitplanes.levels(precision)).astype("float32"))
        self._var(part, 3).assign(float(scale))
        self._var(part, 4).assign(float(precision))
        self.sync_inner_kernel()

    def set_kernel(self, kernel, bits, scale=None, part="kernel"):
        """Quantize a float kernel (or bias) to `bits` bits (scale max|W| unless given)."""
        codes, scale = bitplanes.quantize_codes(kernel, bits, scale)
        self.set_codes(codes, scale, bits, part=part)

    def dequantized_kernel(self, part="kernel"):
        return bitplanes.dequantize(*self.get_codes(part))

    def requantize(self, adjust=True, increase=True):
        """BSQ's `quant()` + `pruning()`: exact binary planes, then the precision adjustment.

        `increase`: a magnitude overflowing the current n bits adds one bit (value kept)
        while n < min(8, bits); otherwise (or with `increase=False`) it is clipped. Then, if
        `adjust`, all-zero MSB / LSB planes are dropped. Returns the new precision.
        """
        for part in self.parts:  # the bias (if quantized) is re-quantized like the kernel
            if self.representation == "bits":
                codes, scale, n = bitplanes.requantize_planes(
                    *self._planes(part), float(ops.convert_to_numpy(self._var(part, 3))),
                    self.current_precision(part), grow_limit=min(bitplanes.GROW_LIMIT, self.bits),
                    increase=increase)
            else:
                codes, scale, n = self.get_codes(part)
            if adjust:
                codes, scale, n = bitplanes.adjust_precision(codes, scale, n)
            self.set_codes(codes, scale, n, part=part)
        return self.current_precision()

    def sync_inner_kernel(self):
        """Write the represented kernel (and bias) into the frozen inner layer (inspection/export)."""
        for part in self.parts:
            inner = getattr(self.layer, part)
            inner.assign(self.dequantized_kernel(part).astype(inner.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"bits": self.bits, "representation": self.representation,
                       "quantize_bias": self.quantize_bias})
        return config
