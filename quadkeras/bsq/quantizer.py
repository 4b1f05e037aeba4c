"""`BitPlanes`: a weight in BSQ's bit representation, as a quantizer (method `"bsq"`).

BSQ (Yang et al., ICLR 2021) trains each weight tensor as bits: positive / negative planes
`P_b, N_b` (shape `weight.shape + (bits,)`, values kept in [0, 2]) and a trainable `scale`;
the weight is `scale * STE_round_n(sum_b (P_b - N_b) 2^b / (2^n - 1))`, with the current
precision n (<= bits) in the non-trainable variable `precision`. In training it adds its
weighted bit-level group Lasso, `reg_strength * #params * n * sum_b ||b||`, with `add_loss`
(`reg_strength` = alpha / total params, set by `quadkeras.bsq.set_bsq_decay`).

`representation="float"` (finetune with the scheme fixed, BSQ's `to_finetune`): a trainable
normalised weight `norm` in [-1, 1], quantized with STE to n bits.

The quantizer *holds* the weight (`holds_value`): a `QuantizeWrapper` freezes its layer's own
kernel (or bias) and computes with what this quantizer returns, whatever it is handed. It
sees the layer's own kernel layout (`kernel_view = False`). In a quadratic layer with several
linear branches (QuadraLib's W_a, W_b, W_c; `per_branch=True`, the default) each branch
kernel is one *part* with its own planes, scale and precision (`pos_planes_a`, `scale_a`,
`precision_a`, ...): the host hands the branch channels over in `branch_index` before the
build, and the fused kernel is assembled from the parts. Variables are never autocast: under
mixed precision the weight is rebuilt in float32.

NumPy access per part (`branch`: None for a one-part tensor, else "a", "b", "c"):
`get_codes` / `set_codes`, `set_value`, `dequantized`, `requantize` (BSQ's `quant()` and
precision adjustment), `current_precision`, `part_params`.

Example:

>>> import numpy as np, keras
>>> from quadkeras.quantize import QuantizeWrapper
>>> layer = QuantizeWrapper(keras.layers.Dense(4), kernel_quantizer="bsq:8")
>>> y = layer(keras.ops.ones((2, 3)))
>>> q = layer.kernel_quantizer
>>> q.current_precision(), [v.name for v in q.trainable_weights]
(8, ['pos_planes', 'neg_planes', 'scale'])
>>> codes, scale, bits = q.get_codes()
>>> bool(np.allclose(q.dequantized(), scale * codes / 255))
True
"""

import keras
import numpy as np
from keras import ops

from quadkeras.bsq import bitplanes
from quadkeras.bsq.kernel_ops import bit_group_lasso, reconstruct, ste_quantize
from quadkeras.quantizers.base import Quantizer, register
from quadkeras.utils.validation import check_choice, check_int_range

REPRESENTATIONS = ("bits", "float")
BRANCH_LETTERS = "abc"  # QuadraLib's W_a, W_b, W_c
PLANE_BOUNDS = (0.0, 2.0)  # continuous planes between re-quantizations


def _key(branch):
    """The string key of a part (TF's object tracking saves only string-keyed dicts)."""
    return "" if branch is None else branch


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


@register
class BitPlanes(Quantizer):
    """A weight held as BSQ bit planes (or, `representation="float"`, its finetune form).

    Args:
        bits: number of bit planes (the starting and largest precision), 1..16.
        representation: `"bits"` (trainable planes) or `"float"` (fixed-scheme finetune).
        per_branch: a quadratic layer's branch kernels each get their own planes, scale and
            precision (False: one fused kernel). No effect elsewhere.
        **kwargs: `Quantizer` arguments (`role` is always "weight").
    """

    method = "bsq"
    allowed_bits = tuple(range(1, bitplanes.MAX_BITS + 1))
    holds_value = True
    kernel_view = False

    def __init__(self, bits=8, representation="bits", per_branch=True, **kwargs):
        role = kwargs.pop("role", None) or "weight"
        if role != "weight":
            raise ValueError(f"Invalid role={role!r} for quantizer 'bsq': expected 'weight' (BSQ's bit "
                             "planes hold a weight; its activations use quadkeras.bsq.BSQActivation).")
        super().__init__(bits=bits, role=role, **kwargs)
        self.representation = check_choice("representation", representation, REPRESENTATIONS)
        self.per_branch = bool(per_branch)
        self.branch_index = None  # set by the host before build: channels of each branch (last axis)

    # ------------------------------------------------------------------- build
    def _build(self, shape):
        index = self.branch_index if self.per_branch and self.branch_index is not None else None
        if index is not None and len(index) > 1:
            self.branches = list(BRANCH_LETTERS[:len(index)])
            self._channels = {b: np.asarray(i, "int32") for b, i in zip(self.branches, index)}
            order = np.argsort(np.concatenate(list(self._channels.values()))).astype("int32")
            self._fuse_order = None if np.array_equal(order, np.arange(len(order))) else order
        else:
            self.branches, self._channels, self._fuse_order = [None], {}, None
        self._vars = {}
        self._shapes = {}
        for branch in self.branches:
            count = shape[-1] if branch is None else len(self._channels[branch])
            self._add_part(branch, tuple(shape[:-1]) + (int(count),))
        self.reg_strength = self._variable("reg_strength", (), trainable=False)
        if self._value_at_build is not None:
            self.set_value(ops.convert_to_numpy(self._value_at_build), self.bits)

    def _variable(self, name, shape, trainable=True, initializer="zeros", constraint=None):
        return self.add_weight(name=name, shape=shape, trainable=trainable, initializer=initializer,
                               constraint=constraint, autocast=False)

    def _add_part(self, branch, shape):
        suffix = "" if branch is None else f"_{branch}"
        self._shapes[_key(branch)] = shape
        found = {}
        if self.representation == "bits":
            for kind in ("pos_planes", "neg_planes"):
                found[kind] = self._variable(kind + suffix, shape + (self.bits,),
                                             constraint=ClipConstraint(*PLANE_BOUNDS))
        else:
            found["norm"] = self._variable("norm" + suffix, shape, constraint=ClipConstraint(-1.0, 1.0))
        found["scale"] = self._variable("scale" + suffix, (), initializer="ones")
        found["precision"] = self._variable("precision" + suffix, (), trainable=False,
                                            initializer=keras.initializers.Constant(float(self.bits)))
        self._vars[_key(branch)] = found  # string keys: TF's SavedModel tracks this dict

    def part_variable(self, kind, branch=None):
        """The variable `kind` ("pos_planes", "neg_planes", "norm", "scale", "precision") of a part."""
        if branch not in self.branches:
            raise ValueError(f"Invalid branch={branch!r} for {self.name!r}: expected one of "
                             f"{', '.join(map(repr, self.branches))}.")
        return self._vars[_key(branch)][kind]

    # --------------------------------------------------------------- forward
    def call(self, x, training=None):
        if training and self.representation == "bits":
            self.add_loss(self.regularization())
        return ops.cast(self.represented(), x.dtype)

    def part_tensor(self, branch=None):
        """A part's represented weight, `scale * STE_round_n(...)`, as a tensor."""
        precision = self.part_variable("precision", branch)
        if self.representation == "bits":
            raw = reconstruct(self.part_variable("pos_planes", branch), self.part_variable("neg_planes", branch),
                              precision)
        else:
            raw = self.part_variable("norm", branch)
        return ste_quantize(raw, precision) * self.part_variable("scale", branch)

    def represented(self):
        """The whole weight (a quadratic layer's fused kernel) as a tensor."""
        return self._fuse([self.part_tensor(b) for b in self.branches])

    def _fuse(self, parts, numpy=False):
        if len(parts) == 1:
            return parts[0]
        join, take = (np.concatenate, np.take) if numpy else (ops.concatenate, ops.take)
        fused = join(list(parts), axis=-1)
        return fused if self._fuse_order is None else take(fused, self._fuse_order, axis=-1)

    def regularization(self):
        """reg_strength * sum over parts of #params_part * precision_part * bit group Lasso."""
        if self.representation != "bits":
            return ops.zeros(())
        total = ops.zeros(())
        for branch in self.branches:
            precision = self.part_variable("precision", branch)
            lasso = bit_group_lasso(self.part_variable("pos_planes", branch),
                                    self.part_variable("neg_planes", branch), precision)
            total = total + float(self.part_params(branch)) * ops.cast(precision, lasso.dtype) * lasso
        return self.reg_strength * total

    # -------------------------------------------------------- NumPy state access
    def part_params(self, branch=None):
        """Number of values a part holds."""
        return int(np.prod(self._shapes[_key(branch)]))

    @property
    def num_params(self):
        return sum(self.part_params(b) for b in self.branches)

    def current_precision(self, branch=None):
        """Bits of a part; None on a per-branch tensor: the largest branch precision."""
        if branch is None and self.branches != [None]:
            return max(self.current_precision(b) for b in self.branches)
        return int(round(float(ops.convert_to_numpy(self.part_variable("precision", branch)))))

    def current_bits(self):
        return self.current_precision()

    def get_codes(self, branch=None):
        """(integer codes, scale, precision) of a part (re-quantized, exact)."""
        n = self.current_precision(branch)
        if self.representation == "bits":
            codes = bitplanes.planes_to_codes(*self._planes(branch), n)
        else:
            norm = np.clip(ops.convert_to_numpy(self.part_variable("norm", branch)).astype("float64"), -1.0, 1.0)
            codes = np.rint(norm * bitplanes.levels(n)).astype("int64")
        return codes, float(ops.convert_to_numpy(self.part_variable("scale", branch))), n

    def _planes(self, branch):
        return tuple(ops.convert_to_numpy(self.part_variable(k, branch)) for k in ("pos_planes", "neg_planes"))

    def set_codes(self, codes, scale, precision, branch=None):
        """Set a part to exactly `scale * codes / (2^precision - 1)`."""
        precision = check_int_range("precision", int(precision), 1, self.bits)
        codes = np.asarray(codes, dtype="int64")
        if self.representation == "bits":
            pos, neg = bitplanes.codes_to_planes(codes, self.bits)
            self.part_variable("pos_planes", branch).assign(pos)
            self.part_variable("neg_planes", branch).assign(neg)
        else:
            self.part_variable("norm", branch).assign((codes / bitplanes.levels(precision)).astype("float32"))
        self.part_variable("scale", branch).assign(float(scale))
        self.part_variable("precision", branch).assign(float(precision))

    def set_value(self, value, bits, scale=None):
        """Quantize a float weight (the whole tensor, a quadratic layer's fused kernel) to `bits`
        bits, each part with scale max|W_part| unless `scale` is given; `bits` may be a
        {branch: bits} dict."""
        value = np.asarray(value)
        for branch in self.branches:
            part = value if branch is None else np.take(value, self._channels[branch], axis=-1)
            part_bits = bits[branch] if isinstance(bits, dict) else bits
            self.set_codes(*bitplanes.quantize_codes(part, part_bits, scale), part_bits, branch=branch)

    def dequantized(self, branch=None):
        """The represented weight (or one part) in NumPy; None: the whole (fused) tensor."""
        if branch is None and self.branches != [None]:
            return self._fuse([self.dequantized(b) for b in self.branches], numpy=True)
        return bitplanes.dequantize(*self.get_codes(branch))

    def requantize(self, adjust=True, increase=True):
        """BSQ's `quant()` + `pruning()` on every part: exact binary planes, then the precision
        adjustment. `increase`: a magnitude overflowing n bits adds one bit (value kept) while
        n < min(8, bits), else it is clipped; `adjust`: all-zero MSB / LSB planes are dropped.
        Returns the new precision (the largest part's)."""
        for branch in self.branches:
            if self.representation == "bits":
                codes, scale, n = bitplanes.requantize_planes(
                    *self._planes(branch), float(ops.convert_to_numpy(self.part_variable("scale", branch))),
                    self.current_precision(branch), grow_limit=min(bitplanes.GROW_LIMIT, self.bits),
                    increase=increase)
            else:
                codes, scale, n = self.get_codes(branch)
            if adjust:
                codes, scale, n = bitplanes.adjust_precision(codes, scale, n)
            self.set_codes(codes, scale, n, branch=branch)
        return self.current_precision()

    def get_config(self):
        return {**super().get_config(), "representation": self.representation, "per_branch": self.per_branch}
