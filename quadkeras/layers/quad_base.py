"""Shared machinery of the quadratic layers: fused branches, per-branch BN, recompute.

All linear branches of a layer live in ONE `kernel` variable whose last axis is laid out
as `(groups, branches, units // groups)`; one convolution / matmul computes every branch,
and the branches are then picked out of the fused output. For the `ours` neuron the
per-branch BatchNorm is a per-channel affine on the fused output (batch statistics per
channel in training, which is exactly one BN per branch).

Subclasses supply the linear op (`_linear`), the kernel shape and the output shape; the
neuron math, the BN, `recompute` and serialization live here once.
"""

import warnings

import numpy as np
import keras
from keras import activations, constraints, initializers, ops, regularizers

from quadkeras.layers.fused_ops import batch_norm_infer, batch_norm_train, update_moving
from quadkeras.layers.neurons import (
    BRANCH_NEURONS,
    NEURON_SPECS,
    PRODUCT_NEURONS,
    check_neuron,
    combine_branches,
    num_branches,
)

T1_PARAM_WARNING = 1_000_000


class QuadLayerBase(keras.layers.Layer):
    """Base class of `QuadConv2D`, `QuadDepthwiseConv2D` and `QuadDense`.

    Args:
        neuron: one of `ours` (default), `t1`, `t2`, `t3`, `t4`, `t2_4`.
        use_bias: add a bias to every linear branch.
        recompute: in training, keep only the layer input for backprop and recompute the
            branch outputs in the backward pass (`keras.remat`): less activation memory
            for more compute.
        activation: activation applied to the neuron output.
        bn_momentum, bn_epsilon: per-branch BatchNorm settings (`ours` only). The default
            momentum 0.9 matches PyTorch's (QuadraLib's) BN.
        t1_linear: `t1` only, add the first-order term W_b X.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint, activity_regularizer: as in Keras.
    """

    # Export hook (`quadkeras.export.quad_qat`): `hook(z, index)` applied to the index-th fused
    # linear output of a call (after the per-branch BN of `ours`) just before its branches are
    # split; None (the default) outside export. Not serialized.
    fused_output_hook = None

    def __init__(
        self,
        neuron="ours",
        use_bias=True,
        recompute=False,
        activation=None,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        t1_linear=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.neuron = check_neuron(neuron)
        self.use_bias = bool(use_bias)
        self.recompute = bool(recompute)
        self.activation = activations.get(activation)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.t1_linear = bool(t1_linear)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.num_branches = num_branches(self.neuron)

    @property
    def neuron_spec(self):
        """The `quadkeras.layers.neurons.Neuron` spec of `self.neuron`."""
        return NEURON_SPECS[self.neuron]

    # ----------------------------------------------------------------- subclass hooks
    @property
    def units_per_branch(self):
        """Output features of one branch (filters / units / channels*multiplier)."""
        raise NotImplementedError

    def _layout_groups(self, input_shape):
        """G of the fused channel layout (G, branches, units/G)."""
        return 1

    def _kernel_layout(self):
        """(groups, units) of the kernel's last axis, laid out (groups, branches, units/groups).

        Equals the output layout except for depthwise kernels, whose channel axis is separate.
        """
        return self._groups, self.units_per_branch

    def _kernel_shape(self, input_shape, branches):
        raise NotImplementedError

    def _linear(self, x, kernel):
        raise NotImplementedError

    def _check_input_shape(self, input_shape):
        raise NotImplementedError

    def _patch_size(self, input_shape):
        """Length of the input patch vector X (for the bilinear `t1`)."""
        raise NotImplementedError

    def _patches(self, x):
        raise NotImplementedError

    # ---------------------------------------------------------------------- build
    def build(self, input_shape):
        self._check_input_shape(input_shape)
        units = self.units_per_branch
        self._groups = self._layout_groups(input_shape)
        if self.neuron_spec.bilinear:
            self._build_t1(input_shape)
        else:
            n = self.num_branches
            self.kernel = self.add_weight(
                name="kernel",
                shape=self._kernel_shape(input_shape, n),
                initializer=_BranchwiseInitializer(self.kernel_initializer, n, *self._kernel_layout()),
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            fused = n * units
            if self.use_bias:
                self.bias = self._add_bias(fused)
            kernel_groups, kernel_units = self._kernel_layout()
            self._kernel_branch_index = _branch_indices(kernel_groups, n, kernel_units)
            self._branch_index = _branch_indices(self._groups, n, units)
        if self.neuron_spec.branch_bn:
            fused = self.num_branches * units
            self.branch_gamma = self.add_weight(name="branch_gamma", shape=(fused,), initializer="ones")
            self.branch_beta = self.add_weight(name="branch_beta", shape=(fused,), initializer="zeros")
            self.branch_moving_mean = self.add_weight(
                name="branch_moving_mean", shape=(fused,), initializer="zeros", trainable=False,
                autocast=False,
            )
            self.branch_moving_variance = self.add_weight(
                name="branch_moving_variance", shape=(fused,), initializer="ones", trainable=False,
                autocast=False,
            )

    def _add_bias(self, size):
        return self.add_weight(
            name="bias",
            shape=(size,),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
        )

    def _build_t1(self, input_shape):
        patch = self._patch_size(input_shape)
        units = self.units_per_branch
        params = patch * patch * units
        if params > T1_PARAM_WARNING:
            warnings.warn(
                f"{self.name}: neuron='t1' has {params:,} bilinear parameters "
                f"(patch {patch}^2 x {units}); consider 'ours' or 't4'.",
                stacklevel=3,
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(patch, patch, units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.t1_linear:
            self.linear_kernel = self.add_weight(
                name="linear_kernel",
                shape=self._kernel_shape(input_shape, 1),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
        if self.use_bias:
            self.bias = self._add_bias(units)

    # ----------------------------------------------------------------------- call
    def call(self, inputs, training=None):
        return self.call_with_kernel(inputs, self.kernel, training=training)

    def call_with_kernel(self, inputs, kernel, training=None, branch_quantizer=None,
                         product_quantizer=None):
        """Run the layer with `kernel` in place of `self.kernel` (used by quantize wrappers).

        `branch_quantizer` (optional, a quantizer of the fused output's shape): applied to the
        fused linear output (after the per-branch BN of `ours`) before the branches are
        combined, so int8 QAT sees the rounding the int8 conv/dense output gets at export.
        Not with `t1` / `t2_4`; with it, `recompute` is not used in training.
        `product_quantizer` (optional, of the output's shape): applied to the branch product
        (`a * b` of `ours` / `t4` / `t2_4`, the square of `t3`) before the linear term is
        added, so at export the MUL and the ADD both run in int8.
        """
        x = ops.cast(inputs, self.compute_dtype)
        kernel = ops.cast(kernel, self.compute_dtype)
        bias = ops.cast(self.bias, self.compute_dtype) if self.use_bias else None
        post = self._quantizer_hook(branch_quantizer, "branch_quantizer", BRANCH_NEURONS,
                                    "one fused linear op", training)
        product = self._quantizer_hook(product_quantizer, "product_quantizer", PRODUCT_NEURONS,
                                       "a branch product", training)
        if self.neuron_spec.bilinear:
            y = self._t1_forward(x, kernel, bias)
        elif self.neuron_spec.branch_bn:
            y = self._ours_forward(x, kernel, bias, bool(training), post, product)
        else:
            forward = self._plain_forward
            if post is not None or product is not None:
                forward = lambda *args: self._plain_forward(*args, post=post, product=product)  # noqa: E731
            elif self.recompute and training:
                forward = keras.remat(forward)
            y = forward(x, kernel, bias) if bias is not None else forward(x, kernel)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def _quantizer_hook(self, quantizer, arg, neurons, what, training):
        """`z -> quantizer(z)` for `call_with_kernel`, or None; one-line error if this neuron
        has no such tensor."""
        if quantizer is None:
            return None
        if self.neuron not in neurons:
            raise ValueError(f"Invalid {arg} for neuron={self.neuron!r}: expected one of "
                             f"{', '.join(repr(n) for n in neurons)} ({what}).")
        return lambda z: quantizer(z, training=training)

    def _fused(self, x, kernel, bias, start, count):
        """Linear op for branches [start, start+count) of the fused kernel, bias added."""
        n = self.num_branches
        if (start, count) != (0, n):
            picked = range(start, start + count)
            kernel = _take_channels(kernel, [self._kernel_branch_index[i] for i in picked])
            if bias is not None:
                bias = _take_channels(bias, [self._branch_index[i] for i in picked])
        z = self._linear(x, kernel)
        return z if bias is None else z + bias

    def _split(self, z, count, index=0):
        if self.fused_output_hook is not None:
            z = self.fused_output_hook(z, index)
        units = self.units_per_branch
        if self._groups == 1:
            return list(ops.split(z, count, axis=-1)) if count > 1 else [z]
        return [ops.take(z, idx, axis=-1) for idx in _branch_indices(self._groups, count, units)]

    def _branch_outputs(self, x, kernel, bias=None, post=None):
        squared = self.neuron_spec.squared_branches
        linear = self.num_branches - squared
        if linear and squared:  # `t2_4`: W_a, W_b on X, W_c on X^2
            ab = self._split(self._fused(x, kernel, bias, 0, linear), linear)
            return ab + self._split(self._fused(ops.square(x), kernel, bias, linear, squared),
                                    squared, index=1)
        source = ops.square(x) if squared else x
        z = self._fused(source, kernel, bias, 0, self.num_branches)
        return self._split(z if post is None else post(z), self.num_branches)

    def _plain_forward(self, x, kernel, bias=None, post=None, product=None):
        return combine_branches(self.neuron, self._branch_outputs(x, kernel, bias, post), product)

    # ------------------------------------------------------------- `ours` with BN
    def _ours_forward(self, x, kernel, bias, training, post=None, product=None):
        gamma = ops.cast(self.branch_gamma, self.compute_dtype)
        beta = ops.cast(self.branch_beta, self.compute_dtype)
        if not training:
            mean = ops.cast(self.branch_moving_mean, self.compute_dtype)
            var = ops.cast(self.branch_moving_variance, self.compute_dtype)
            return self._ours_normalised(x, kernel, bias, gamma, beta, mean, var, post, product)
        if post is not None or product is not None:
            forward = lambda *args: self._ours_train(*args, post=post, product=product)  # noqa: E731
        else:
            forward = keras.remat(self._ours_train) if self.recompute else self._ours_train
        args = (x, kernel, gamma, beta) if bias is None else (x, kernel, gamma, beta, bias)
        y, mean, var = forward(*args)
        m = self.bn_momentum
        mean = ops.stop_gradient(ops.cast(mean, self.branch_moving_mean.dtype))
        var = ops.stop_gradient(ops.cast(var, self.branch_moving_variance.dtype))
        update_moving(self.branch_moving_mean, mean, m)
        update_moving(self.branch_moving_variance, var, m)
        return y

    def _ours_train(self, x, kernel, gamma, beta, bias=None, post=None, product=None):
        z = self._fused(x, kernel, bias, 0, 3)
        z, mean, var = batch_norm_train(z, gamma, beta, self.bn_epsilon)
        return self._combine_ours(z, post, product), mean, var

    def _ours_normalised(self, x, kernel, bias, gamma, beta, mean, var, post=None, product=None):
        return self._normalise_and_combine(self._fused(x, kernel, bias, 0, 3), gamma, beta, mean, var,
                                           post, product)

    def _normalise_and_combine(self, z, gamma, beta, mean, var, post=None, product=None):
        return self._combine_ours(batch_norm_infer(z, mean, var, gamma, beta, self.bn_epsilon), post,
                                  product)

    def _combine_ours(self, z, post=None, product=None):
        return combine_branches("ours", self._split(z if post is None else post(z), 3), product)

    def folded_kernel_and_bias(self):
        """Kernel and bias with the per-branch inference BN folded in (NumPy arrays).

        For `ours`, `linear(x, K') + b'` equals the normalised branches at inference;
        other neurons return their kernel and bias unchanged (zeros if no bias).
        """
        kernel = ops.convert_to_numpy(self.kernel)
        units = kernel.shape[-1] if self.neuron_spec.bilinear else self.num_branches * self.units_per_branch
        bias = ops.convert_to_numpy(self.bias) if self.use_bias else np.zeros((units,), kernel.dtype)
        if not self.neuron_spec.branch_bn:
            return kernel, bias
        gamma = ops.convert_to_numpy(self.branch_gamma)
        var = ops.convert_to_numpy(self.branch_moving_variance)
        mean = ops.convert_to_numpy(self.branch_moving_mean)
        scale = gamma / np.sqrt(var + self.bn_epsilon)
        return kernel * scale, (bias - mean) * scale + ops.convert_to_numpy(self.branch_beta)

    # ------------------------------------------------------------------------ t1
    def _t1_forward(self, x, kernel, bias):
        patches = self._patches(x)
        y = ops.einsum("...i,ijo,...j->...o", patches, kernel, patches)
        if self.t1_linear:
            y = y + self._linear(x, ops.cast(self.linear_kernel, self.compute_dtype))
        return y if bias is None else y + bias

    # -------------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "neuron": self.neuron,
                "use_bias": self.use_bias,
                "recompute": self.recompute,
                "activation": activations.serialize(self.activation),
                "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
                "t1_linear": self.t1_linear,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
            }
        )
        return config


def _take_channels(tensor, index_lists):
    """Last-axis channels at the (sorted) union of indices; a slice when contiguous."""
    idx = np.sort(np.concatenate(index_lists))
    if np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return tensor[..., int(idx[0]):int(idx[0]) + len(idx)]
    return ops.take(tensor, idx, axis=-1)


def _branch_indices(groups, branches, units):
    """Channel indices of each branch in the fused layout (groups, branches, units/groups)."""
    per_group = units // groups
    layout = np.arange(groups * branches * per_group).reshape(groups, branches, per_group)
    return [layout[:, i, :].reshape(-1).astype("int32") for i in range(branches)]


class _BranchwiseInitializer:
    """Initialise each fused branch as if it were its own kernel (same fan-in/fan-out)."""

    def __init__(self, base, branches, groups, units):
        self.base = base
        self.branches = branches
        self.groups = groups
        self.units = units

    def __call__(self, shape, dtype=None):
        units = self.units
        one = tuple(shape[:-1]) + (units,)
        parts = []
        for i in range(self.branches):
            init = _branch_initializer(self.base, i)
            part = ops.reshape(init(one, dtype=dtype), one[:-1] + (self.groups, 1, units // self.groups))
            parts.append(part)
        return ops.reshape(ops.concatenate(parts, axis=-2), tuple(shape))


def _branch_initializer(init, branch):
    """`init` for fused branch `branch`: an independent draw per branch.

    A Keras random initializer holds a fixed integer seed (the one given, or one drawn when
    it is created), so calling the same object once per branch would give identical
    branches (a quadratic layer would start with equal kernels). Branch i uses seed + i; a
    `SeedGenerator` seed advances on each call anyway.
    """
    seed = getattr(init, "seed", None)
    if branch == 0 or isinstance(seed, bool) or not isinstance(seed, int):
        return init
    return init.__class__.from_config({**init.get_config(), "seed": seed + branch})
