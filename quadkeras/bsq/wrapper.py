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

Quadratic layers with several linear branches (`QuadConv2D` / `QuadDense` /
`QuadDepthwiseConv2D`, neuron `ours`: W_a, W_b, W_c; `t4`, `t2_4`) hold one part per branch
(`per_branch=True`, the default): parts `kernel_a`, `kernel_b`, ... each with its own planes,
scale and precision (`pos_planes_a`, `scale_a`, `precision_a`, ...), re-quantized and
precision-adjusted on its own and regularised with its own weight #W_branch * n_branch; the
fused kernel the layer runs is assembled from them. `per_branch=False` (and `.keras` files
written before per-branch bits existed) keep one fused `kernel` part of one precision.

The inner layer's own `kernel` is frozen (not trained) and refreshed with the represented
kernel by `sync_inner_kernel()`. Precision is stored in a variable, so the scheme survives
`.keras` save/load.

Example:

>>> import keras
>>> layer = BitQuantWrapper(keras.layers.Dense(4), bits=8)
>>> y = layer(keras.ops.ones((2, 3)))
>>> layer.quantization_bits()
{'weight': 8, 'activation': None}
>>> from quadkeras.layers import QuadDense
>>> quad = BitQuantWrapper(QuadDense(2, neuron="ours"), bits=4)
>>> _ = quad(keras.ops.ones((1, 3)))
>>> quad.kernel_parts, quad.current_precision("kernel_b")
(['kernel_a', 'kernel_b', 'kernel_c'], 4)
"""

import numpy as np
import keras
from keras import ops

from quadkeras.bsq import bitplanes
from quadkeras.bsq.kernel_ops import bit_group_lasso, reconstruct, ste_quantize
from quadkeras.layers.kernel_call import FIRST_ORDER_LAYERS, QUAD_LAYERS, call_with_kernel
from quadkeras.quantizers.hosting import QuantizerHost
from quadkeras.utils.validation import check_choice, check_int_range

REPRESENTATIONS = ("bits", "float")
# variable names of each quantized tensor: positive / negative planes, float form, scale, precision
PART_VARIABLES = {"kernel": ("pos_planes", "neg_planes", "norm_kernel", "scale", "precision"),
                  "bias": ("pos_bias_planes", "neg_bias_planes", "norm_bias", "bias_scale", "bias_precision")}
BRANCH_LETTERS = "abc"  # QuadraLib's W_a, W_b, W_c


def part_variables(part):
    """Variable names of a part: "kernel", "bias" or a branch kernel "kernel_a" (`pos_planes_a`, ...)."""
    if part in PART_VARIABLES:
        return PART_VARIABLES[part]
    branch = part[len("kernel_"):]
    return tuple(f"{name}_{branch}" for name in PART_VARIABLES["kernel"])


def part_key(layer_name, part):
    """Scheme / report key of a kernel part: the layer name, `name[a]` for branch a."""
    return f"{layer_name}[{part[len('kernel_'):]}]" if part.startswith("kernel_") else layer_name


def split_key(key):
    """(layer name, part) of a scheme key (`part_key`'s inverse)."""
    if key.endswith("]") and "[" in key:
        name, branch = key[:-1].rsplit("[", 1)
        return name, f"kernel_{branch}"
    return key, "kernel"


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
class BitQuantWrapper(QuantizerHost):
    """Weights of `layer` (Conv2D, DepthwiseConv2D, Dense, QuadConv2D/Dense/Depthwise) in BSQ form.

    A `QuantizerHost` without quantizer slots: the bit planes, scales and precisions are the
    host's own variables, saved through `variable_spec`.

    Args:
        layer: the layer to wrap (its `kernel` is replaced; bias / BN stay float).
        bits: number of bit planes (the starting and maximum precision), 1..16.
        representation: `"bits"` (trainable bit planes) or `"float"` (fixed-scheme finetune).
        quantize_bias: also hold the bias in BSQ form (first-order layers; ignored without a bias).
        per_branch: a quadratic layer with several branches holds each branch kernel with its
            own planes, scale and precision (parts `kernel_a`, `kernel_b`, ...); False: one fused
            kernel. No effect on other layers.
    """

    def __init__(self, layer, bits=8, representation="bits", quantize_bias=False, per_branch=True, **kwargs):
        super().__init__(layer, **kwargs)
        self.bits = check_int_range("bits", int(bits), 1, bitplanes.MAX_BITS)
        self.representation = check_choice("representation", representation, REPRESENTATIONS)
        self.quantize_bias = bool(quantize_bias)
        if self.quantize_bias and not isinstance(layer, FIRST_ORDER_LAYERS):
            raise ValueError(f"Invalid quantize_bias=True for layer {layer.name!r} ({type(layer).__name__}): "
                             "expected a Conv2D, DepthwiseConv2D or Dense layer.")
        self.per_branch = bool(per_branch)
        branches = getattr(layer, "num_branches", 0) if isinstance(layer, QUAD_LAYERS) else 0
        self.kernel_parts = ([f"kernel_{BRANCH_LETTERS[i]}" for i in range(branches)]
                             if self.per_branch and branches > 1 else ["kernel"])
        self.parts = list(self.kernel_parts)
        self._part_shapes = {}
        self._created = []  # (variable name, trainable) in creation order: `variable_spec`

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config.setdefault("per_branch", False)  # files written before per-branch bits: one fused kernel
        return super().from_config(config, custom_objects)

    @property
    def branch_bits(self):
        """True when each branch kernel of a quadratic layer has its own bits."""
        return self.kernel_parts != ["kernel"]

    def _var(self, part, index):
        if part == "kernel" and self.branch_bits:
            raise ValueError(f"Invalid part='kernel' for layer {self.name!r}: it holds one kernel per branch; "
                             f"expected one of {', '.join(self.kernel_parts)}.")
        return getattr(self, part_variables(part)[index])

    def _part_value(self, kernel, part):
        """The slice of a fused kernel (NumPy) that `part` holds (all of it for "kernel")."""
        if part.startswith("kernel_"):
            return np.take(kernel, self._branch_index[BRANCH_LETTERS.index(part[-1])], axis=-1)
        return kernel

    def _fuse(self, branch_kernels, numpy=False):
        """The fused kernel (last axis in the layer's branch layout) of the branch kernels."""
        join, take = (np.concatenate, np.take) if numpy else (ops.concatenate, ops.take)
        fused = join(list(branch_kernels), axis=-1)
        return fused if self._fuse_order is None else take(fused, self._fuse_order, axis=-1)

    def _add_variable(self, name, shape, trainable=True, **kwargs):
        variable = self.add_weight(name=name, shape=shape, trainable=trainable, autocast=False, **kwargs)
        self._created.append((name, bool(trainable)))
        return variable

    def _add_part(self, part, shape):
        self._part_shapes[part] = tuple(int(d) for d in shape)
        pos, neg, norm, scale, precision = part_variables(part)
        if self.representation == "bits":
            clip = ClipConstraint(0.0, 2.0)
            for name in (pos, neg):
                setattr(self, name, self._add_variable(name, shape + (self.bits,), initializer="zeros",
                                                       constraint=clip))
        else:
            setattr(self, norm, self._add_variable(norm, shape, initializer="zeros",
                                                   constraint=ClipConstraint(-1.0, 1.0)))
        setattr(self, scale, self._add_variable(scale, (), initializer="ones"))
        setattr(self, precision, self._add_variable(precision, (), trainable=False,
                                                    initializer=keras.initializers.Constant(float(self.bits))))

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = getattr(self.layer, "kernel", None)
        if kernel is None:
            raise ValueError(f"Invalid layer {self.layer.name!r}: BitQuantWrapper needs a layer with a `kernel`.")
        kernel.trainable = False  # the wrapper owns the trainable kernel representation
        self._branch_index = self._fuse_order = None
        if self.branch_bits:  # channels of each branch on the fused kernel's last axis
            self._branch_index = [np.asarray(i, "int32") for i in self.layer._kernel_branch_index]
            order = np.argsort(np.concatenate(self._branch_index)).astype("int32")
            self._fuse_order = None if np.array_equal(order, np.arange(len(order))) else order
        shape = tuple(int(d) for d in kernel.shape)
        for part in self.kernel_parts:
            self._add_part(part, shape[:-1] + (len(self._part_value(np.zeros(shape[-1:]), part)),))
        self.reg_strength = self._add_variable("reg_strength", (), trainable=False, initializer="zeros")
        if self.quantize_bias and getattr(self.layer, "bias", None) is not None:
            self.layer.bias.trainable = False
            self._add_part("bias", tuple(self.layer.bias.shape))
            self.parts = [*self.kernel_parts, "bias"]
        self.built = True
        inner = ("kernel", "bias") if "bias" in self.parts else ("kernel",)
        initial = {part: ops.convert_to_numpy(getattr(self.layer, part)) for part in inner}
        for part in inner:
            self.set_kernel(initial[part], self.bits, part=part)

    # ------------------------------------------------------------------ forward
    def normalized_kernel(self, part="kernel"):
        """Kernel (or bias) / scale on the n-bit grid (STE rounding), as a tensor."""
        if self.representation == "bits":
            raw = reconstruct(self._var(part, 0), self._var(part, 1), self._var(part, 4))
        else:
            raw = self._var(part, 2)
        return ste_quantize(raw, self._var(part, 4))

    def kernel_tensor(self, part="kernel"):
        """The represented kernel (or part) as a tensor (what `call` computes with); "kernel" is
        the fused kernel of all branches."""
        if part == "kernel" and self.branch_bits:
            return self._fuse([self.kernel_tensor(p) for p in self.kernel_parts])
        return self.normalized_kernel(part) * self._var(part, 3)

    def quantized_kernel(self, part="kernel"):
        """`kernel_tensor` in NumPy (every quantizer host returns its kernel so)."""
        return ops.convert_to_numpy(self.kernel_tensor(part))

    def regularization(self):
        """reg_strength * sum over the parts (kernel or each branch kernel, bias) of
        #params_part * precision_part * bit-level group Lasso of the part."""
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
        bias = self.kernel_tensor("bias") if "bias" in self.parts else None
        return call_with_kernel(self.layer, inputs, self.kernel_tensor(), training=training, bias=bias)

    def variable_spec(self):
        """The variables saved under the layer, in file order: the trainable ones (planes or
        normalised kernel, scale; per part), then the others (precisions, `reg_strength`), each
        in creation order, as Keras saves a layer's own variables."""
        return ([getattr(self, name) for name, trainable in self._created if trainable]
                + [getattr(self, name) for name, trainable in self._created if not trainable])

    # ------------------------------------------------------- NumPy state access
    @property
    def num_params(self):
        return int(np.prod(self.layer.kernel.shape))

    def part_params(self, part):
        """Number of values a part holds (a branch kernel: its slice of the fused kernel)."""
        return int(np.prod(self._part_shapes[part]))

    @property
    def bias_params(self):
        """Number of bit-quantized bias values (0 unless `quantize_bias`)."""
        return int(np.prod(self.layer.bias.shape)) if "bias" in self.parts else 0

    def current_precision(self, part="kernel"):
        """Bits of a part; "kernel" of a per-branch layer: the largest branch precision."""
        if part == "kernel" and self.branch_bits:
            return max(self.current_precision(p) for p in self.kernel_parts)
        return int(round(float(ops.convert_to_numpy(self._var(part, 4)))))

    def precisions(self):
        """{scheme key: bits} of the kernel parts (`name`, or `name[a]`, `name[b]`, ... per branch)."""
        return {part_key(self.name, part): self.current_precision(part) for part in self.kernel_parts}

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
        """Quantize a float kernel (or bias) to `bits` bits (scale max|W| unless given).

        A per-branch layer's fused "kernel" sets every branch at `bits` (`bits` may be a
        {part: bits} dict), each with its own scale max|W_branch|."""
        if part == "kernel" and self.branch_bits:
            kernel = np.asarray(kernel)
            for p in self.kernel_parts:
                self.set_kernel(self._part_value(kernel, p), bits[p] if isinstance(bits, dict) else bits, scale, p)
            return
        codes, scale = bitplanes.quantize_codes(kernel, bits, scale)
        self.set_codes(codes, scale, bits, part=part)

    def dequantized_kernel(self, part="kernel"):
        """The represented kernel (or part) in NumPy; "kernel" is the fused kernel of all branches."""
        if part == "kernel" and self.branch_bits:
            return self._fuse([self.dequantized_kernel(p) for p in self.kernel_parts], numpy=True)
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
        for part in ("kernel", "bias") if "bias" in self.parts else ("kernel",):  # fused kernel, bias
            inner = getattr(self.layer, part)
            inner.assign(self.dequantized_kernel(part).astype(inner.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"bits": self.bits, "representation": self.representation,
                       "quantize_bias": self.quantize_bias, "per_branch": self.per_branch})
        return config
