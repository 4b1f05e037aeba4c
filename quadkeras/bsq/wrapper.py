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
from quadkeras.layers.kernel_call import call_with_kernel
from quadkeras.utils.validation import check_choice, check_int_range

REPRESENTATIONS = ("bits", "float")


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
    """

    def __init__(self, layer, bits=8, representation="bits", **kwargs):
        super().__init__(layer, **kwargs)
        self.bits = check_int_range("bits", int(bits), 1, bitplanes.MAX_BITS)
        self.representation = check_choice("representation", representation, REPRESENTATIONS)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = getattr(self.layer, "kernel", None)
        if kernel is None:
            raise ValueError(f"Invalid layer {self.layer.name!r}: BitQuantWrapper needs a layer with a `kernel`.")
        kernel.trainable = False  # the wrapper owns the trainable kernel representation
        shape = tuple(kernel.shape)
        if self.representation == "bits":
            clip = ClipConstraint(0.0, 2.0)
            self.pos_planes = self.add_weight(name="pos_planes", shape=shape + (self.bits,),
                                              initializer="zeros", constraint=clip, autocast=False)
            self.neg_planes = self.add_weight(name="neg_planes", shape=shape + (self.bits,),
                                              initializer="zeros", constraint=clip, autocast=False)
        else:
            self.norm_kernel = self.add_weight(name="norm_kernel", shape=shape, initializer="zeros",
                                               constraint=ClipConstraint(-1.0, 1.0), autocast=False)
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones", autocast=False)
        self.precision = self.add_weight(name="precision", shape=(), trainable=False,
                                         initializer=keras.initializers.Constant(float(self.bits)),
                                         autocast=False)
        self.reg_strength = self.add_weight(name="reg_strength", shape=(), trainable=False,
                                            initializer="zeros", autocast=False)
        self.built = True
        self.set_kernel(ops.convert_to_numpy(kernel), self.bits)

    # ------------------------------------------------------------------ forward
    def normalized_kernel(self):
        """Kernel / scale on the n-bit grid (STE rounding), as a tensor."""
        if self.representation == "bits":
            raw = reconstruct(self.pos_planes, self.neg_planes, self.precision)
        else:
            raw = self.norm_kernel
        return ste_quantize(raw, self.precision)

    def quantized_kernel(self):
        return self.normalized_kernel() * self.scale

    def regularization(self):
        """reg_strength * #params * precision * bit-level group Lasso (0 for "float")."""
        if self.representation != "bits":
            return ops.zeros(())
        size = float(np.prod(self.pos_planes.shape[:-1]))
        lasso = bit_group_lasso(self.pos_planes, self.neg_planes, self.precision)
        return self.reg_strength * size * ops.cast(self.precision, lasso.dtype) * lasso

    def call(self, inputs, training=None):
        if self.representation == "bits" and training:
            self.add_loss(self.regularization())
        return call_with_kernel(self.layer, inputs, self.quantized_kernel(), training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ------------------------------------------------------- NumPy state access
    @property
    def num_params(self):
        return int(np.prod(self.layer.kernel.shape))

    def current_precision(self):
        return int(round(float(ops.convert_to_numpy(self.precision))))

    def quantization_bits(self):
        return {"weight": self.current_precision(), "activation": None}

    def get_codes(self):
        """(integer codes, scale, precision) of the current kernel (re-quantized, exact)."""
        n = self.current_precision()
        if self.representation == "bits":
            codes = bitplanes.planes_to_codes(ops.convert_to_numpy(self.pos_planes),
                                              ops.convert_to_numpy(self.neg_planes), n)
        else:
            norm = np.clip(ops.convert_to_numpy(self.norm_kernel).astype("float64"), -1.0, 1.0)
            codes = np.rint(norm * bitplanes.levels(n)).astype("int64")
        return codes, float(ops.convert_to_numpy(self.scale)), n

    def set_codes(self, codes, scale, precision):
        """Set the exact representation `scale * codes / (2^precision - 1)`."""
        precision = check_int_range("precision", int(precision), 1, self.bits)
        codes = np.asarray(codes, dtype="int64")
        if self.representation == "bits":
            pos, neg = bitplanes.codes_to_planes(codes, self.bits)
            self.pos_planes.assign(pos)
            self.neg_planes.assign(neg)
        else:
            self.norm_kernel.assign((codes / bitplanes.levels(precision)).astype("float32"))
        self.scale.assign(float(scale))
        self.precision.assign(float(precision))
        self.sync_inner_kernel()

    def set_kernel(self, kernel, bits, scale=None):
        """Quantize a float kernel to `bits` bits (scale max|W| unless given)."""
        codes, scale = bitplanes.quantize_codes(kernel, bits, scale)
        self.set_codes(codes, scale, bits)

    def dequantized_kernel(self):
        codes, scale, n = self.get_codes()
        return bitplanes.dequantize(codes, scale, n)

    def requantize(self, adjust=True, increase=True):
        """BSQ's `quant()` + `pruning()`: exact binary planes, then the precision adjustment.

        `increase`: a magnitude overflowing the current n bits adds one bit (value kept)
        while n < min(8, bits); otherwise (or with `increase=False`) it is clipped. Then, if
        `adjust`, all-zero MSB / LSB planes are dropped. Returns the new precision.
        """
        if self.representation == "bits":
            codes, scale, n = bitplanes.requantize_planes(
                ops.convert_to_numpy(self.pos_planes), ops.convert_to_numpy(self.neg_planes),
                float(ops.convert_to_numpy(self.scale)), self.current_precision(),
                grow_limit=min(bitplanes.GROW_LIMIT, self.bits), increase=increase)
        else:
            codes, scale, n = self.get_codes()
        if adjust:
            codes, scale, n = bitplanes.adjust_precision(codes, scale, n)
        self.set_codes(codes, scale, n)
        return n

    def sync_inner_kernel(self):
        """Write the represented kernel into the frozen inner `kernel` (for inspection/export)."""
        self.layer.kernel.assign(self.dequantized_kernel().astype(self.layer.kernel.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"bits": self.bits, "representation": self.representation})
        return config
