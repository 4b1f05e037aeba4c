"""`Quantizer`: the one base class of every quantization method.

A quantizer is a small serializable object (not a layer). The layer that uses it (usually
`quadkeras.quantize.QuantizeWrapper`) calls `quantizer.build(layer, shape, name, value=...)`,
which creates the quantizer's variables on *that* layer with `layer.add_weight` (so they are
saved with the model and seen by the optimizer), then `quantizer(x, training=...)`.

Shared here, once: bit-width checks, signed/unsigned, per-tensor / per-channel / grouped
statistics and parameters (channels are the last axis), optional var-mean weight
normalisation, first-training-batch initialisation of data-dependent parameters, and the
state contract: every quantizer variable is created with `autocast=False` (kept in float32
and really assigned under a `mixed_*` policy, also on torch), updates computed from
non-finite statistics are skipped (the old value is kept), and the output has the input's
dtype. Methods override only `_build` (their variables) and `quantize` (their math).

Example:

>>> import numpy as np, keras
>>> from quadkeras.quantizers import get
>>> q = get("lsq:4")
>>> layer = keras.layers.Layer()
>>> q.build(layer, (3, 3, 2, 4), "kernel", value=np.ones((3, 3, 2, 4), "float32"))
>>> [v.name for v in layer.weights]
['kernel_step']
"""

import contextlib
import weakref

import numpy as np
import keras
from keras import ops

from quadkeras.utils.validation import check_choice, check_positive_int

GRANULARITIES = ("per_tensor", "per_channel", "groups")
ROLES = ("weight", "activation")
NORMALIZATIONS = (None, "var_mean")
HALF = ("float16", "bfloat16")


class Quantizer:
    """Base quantizer: a bit width plus granularity; subclasses supply the math.

    Args:
        bits: bit width; each method lists the widths it allows (`allowed_bits`).
        signed: signed levels (default: True for weights, False for activations).
        granularity: `per_tensor`, `per_channel` (last axis) or `groups`
            (channels split into `groups` contiguous groups, one parameter per group).
            Default: the method's choice (`_default_granularity`).
        groups: number of groups when `granularity="groups"`.
        normalize: None or `"var_mean"` (standardise per output channel before quantizing).
        role: `"weight"` or `"activation"`; the wrapper fills it in when None.
    """

    name = None
    allowed_bits = tuple(range(2, 9))
    weight_granularity = "per_tensor"  # the method's default for weights (activations: per tensor)
    var_mean_axes = "channel"  # var-mean statistics per "channel" or per quantization "group"
    var_mean_detached = False  # True: no gradient through the var-mean statistics
    # Post-training calibration (`quadkeras.quantize.calibration`): when set, inference calls
    # hand the input to `observer(quantizer, x)` and pass it through unquantized.
    observer = None

    def __init__(self, bits=8, signed=None, granularity=None, groups=None, normalize=None, role=None):
        self.bits = check_choice(f"bits (quantizer {self.name!r})", bits, self.allowed_bits)
        self._signed = None if signed is None else bool(signed)
        if granularity is not None:
            check_choice("granularity", granularity, GRANULARITIES)
        self.granularity = granularity
        if granularity == "groups":
            check_positive_int("groups", groups)
        self.groups = groups
        self.normalize = check_choice("normalize", normalize, NORMALIZATIONS)
        self.role = None if role is None else check_choice("role", role, ROLES)
        self.built = False

    # -------------------------------------------------------------- properties
    @property
    def signed(self):
        if self._signed is not None:
            return self._signed
        return self.role != "activation"

    def _default_granularity(self, shape):
        return self.weight_granularity if self.role == "weight" else "per_tensor"

    # -------------------------------------------------------------------- build
    def build(self, layer, shape, name, value=None):
        """Create this quantizer's variables on `layer` for inputs of `shape`.

        `value` (optional, e.g. the kernel) initialises data-dependent parameters now;
        otherwise they are initialised from the first training batch.
        """
        if self.role is None:
            self.role = "weight" if value is not None else "activation"
        self.shape = tuple(shape)
        if self.granularity is None:
            self.granularity = self._default_granularity(self.shape)
        self.channels = self.shape[-1]
        if self.granularity == "groups" and (self.channels is None or self.channels % self.groups):
            raise ValueError(
                f"Invalid groups={self.groups} for {name}: expected a divisor of the "
                f"channel count {self.channels}."
            )
        self.param_shape = {"per_tensor": (), "per_channel": (self.channels,),
                            "groups": (self.groups,)}[self.granularity]
        self._layer = layer
        self._prefix = name
        self.params = {}
        self._data_inits = {}
        self._flag = None
        self._build(layer, self.shape, name)
        if self._data_inits:
            if value is not None:
                x = self._prepare(ops.convert_to_tensor(value))
                for var, fn in self._data_inits.values():
                    var.assign(ops.cast(fn(x), var.dtype))
            else:
                self._flag = layer.add_weight(name=f"{name}_initialized", shape=(),
                                              initializer="zeros", trainable=False, autocast=False)
        self.built = True

    def _build(self, layer, shape, name):
        """Subclasses create their variables here (use `self.add_param`; they are then listed
        in `self.params`, {name: variable})."""

    def add_param(self, name, initializer="zeros", trainable=True, extra_shape=(), data_init=None):
        """Add a variable of shape `param_shape + extra_shape` named `<prefix>_<name>`.

        `data_init(x)` (optional) computes its initial value from data: from the `value`
        given to `build`, else from the first training batch. `autocast=False`: the
        variable stays float32 under mixed precision, so assignments in `call` stick.
        """
        var = self._layer.add_weight(name=f"{self._prefix}_{name}",
                                     shape=self.param_shape + tuple(extra_shape),
                                     initializer=initializer, trainable=trainable, autocast=False)
        self.params[name] = var
        _PARAMETERS[id(var)] = var
        if data_init is not None:
            self._data_inits[id(var)] = (var, data_init)
        return var

    # --------------------------------------------------------------------- call
    def __call__(self, x, training=None):
        if not self.built:
            raise ValueError(f"Quantizer {self.name!r} used before build(): call build(layer, shape, name) first.")
        x = ops.convert_to_tensor(x)
        if self.observer is not None and not training:
            self.observer(self, self._prepare(x))
            return x
        dtype = keras.backend.standardize_dtype(x.dtype)
        self._init_ok = None
        # the math runs in float32 (the parameters' dtype) also under mixed precision
        y = self.quantize(self._prepare(ops.cast(x, "float32") if dtype in HALF else x), bool(training))
        return ops.cast(y, dtype)

    def quantize(self, x, training):
        """Subclasses: the fake-quantized tensor (float, same shape as x)."""
        raise NotImplementedError

    def _prepare(self, x):
        if self.normalize == "var_mean":
            if self.var_mean_axes == "channel":
                axes = tuple(range(len(x.shape) - 1))
                mean = ops.mean(x, axis=axes, keepdims=True)
                var = ops.var(x, axis=axes, keepdims=True)
            else:  # per quantization group (one statistic per tensor / channel / group)
                mean, var = self.reduce(x, ops.mean), self.reduce(x, ops.var)
            if self.var_mean_detached:
                mean, var = ops.stop_gradient(mean), ops.stop_gradient(var)
            x = (x - mean) / ops.sqrt(var + 1e-12)
        return x

    def param(self, var, x, training):
        """The value of `var` to use now: data-initialised on the first training batch.

        On that batch the variable (and the `initialized` flag) are assigned. Backends whose
        trainers drop assignments to trainable variables inside `call` (JAX) keep the
        variable's initializer value instead; initialise from a value at build time there.
        A non-finite statistic (a NaN/inf in the batch) is not used: the variable keeps its
        value and the flag stays 0, so the next finite batch initialises it.
        """
        if self._flag is None or id(var) not in self._data_inits:
            return ops.convert_to_tensor(var)
        init_fn = self._data_inits[id(var)][1]
        candidate = ops.cond(  # only the first batch pays for the data statistic
            ops.equal(self._flag, 0.0),
            lambda: ops.stop_gradient(ops.cast(init_fn(x), var.dtype)) + 0.0 * var,  # grad 0, not None
            lambda: ops.convert_to_tensor(var),
        )
        if not training:  # nothing is assigned: the inference graph stays a plain cond
            return candidate
        ok = ops.all(ops.isfinite(candidate))
        self._init_ok = ok if self._init_ok is None else ops.logical_and(self._init_ok, ok)
        value = ops.where(ok, candidate, ops.convert_to_tensor(var))
        var.assign(ops.stop_gradient(value))
        return value

    @property
    def awaiting_data_init(self):
        """True while data-dependent parameters wait for their first training batch."""
        return self._flag is not None and float(ops.convert_to_numpy(self._flag)) == 0.0

    @contextlib.contextmanager
    def stored_parameters_only(self):
        """Within the block, calls use the stored parameters without the first-batch
        data-init branch (export: its `where(initialized, var, f(x))` would make ranges
        depend on the input); after training they hold the same values."""
        flag, self._flag = self._flag, None
        try:
            yield self
        finally:
            self._flag = flag

    def data_init_variables(self):
        """The variables the first-batch initialisation assigns (the flag included)."""
        found = [var for var, _ in self._data_inits.values()]
        return found + ([self._flag] if self._flag is not None else [])

    def finish(self, training):
        """Mark data-dependent parameters initialised (call at the end of `quantize`)."""
        if training and self._flag is not None:
            done = 1.0 if self._init_ok is None else ops.where(self._init_ok, 1.0, ops.convert_to_tensor(self._flag))
            self._flag.assign(done)

    # ----------------------------------------------------- granularity helpers
    def reduce_params(self, x, fn):
        """Per-parameter statistic `fn(t, axis=...)` of x: scalar, (C,) or (G,)."""
        if self.granularity == "per_tensor":
            return fn(x, axis=None)
        if self.granularity == "per_channel":
            return fn(x, axis=tuple(range(len(x.shape) - 1)))
        g = self.groups
        return fn(ops.reshape(x, (-1, g, self.channels // g)), axis=(0, 2))

    def reduce(self, x, fn):
        """`reduce_params` broadcastable to x's channels (groups repeated to (C,))."""
        return self.expand(self.reduce_params(x, fn))

    def expand(self, p):
        """A parameter of `param_shape (+ extra)` broadcast to channels (groups repeated)."""
        if self.granularity == "groups":
            return ops.repeat(p, self.channels // self.groups, axis=0)
        return p

    def per_param(self, x):
        """x reshaped to (M, P): one column per parameter (P = 1, C or G)."""
        if self.granularity == "per_tensor":
            return ops.reshape(x, (-1, 1))
        if self.granularity == "per_channel":
            return ops.reshape(x, (-1, self.channels))
        g = self.groups
        grouped = ops.reshape(x, (-1, g, self.channels // g))
        return ops.reshape(ops.transpose(grouped, (0, 2, 1)), (-1, g))

    def elements_per_param(self, x=None):
        """How many elements share one parameter (N of LSQ's gradient scale): weights per
        tensor / channel / group, or features per sample for activations. Dimensions unknown
        at build (None) are taken from `x`'s runtime shape (a float tensor then)."""
        shape = tuple(self.shape if x is None else x.shape)
        dims = list(shape[1:] if self.role == "activation" else shape)
        params = max(1, int(np.prod(self.param_shape)))
        if None not in dims:
            return max(1, int(np.prod(dims)) // params) if dims else 1
        if x is None:
            raise ValueError(f"Invalid shape {self.shape} for elements_per_param: expected known "
                             "dimensions, or pass the runtime tensor x.")
        total = ops.convert_to_tensor(1.0)
        for d in ops.shape(x)[len(shape) - len(dims):]:
            total = total * ops.cast(d, "float32")
        return ops.maximum(total / float(params), 1.0)

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {"bits": self.bits, "signed": self._signed, "granularity": self.granularity,
                "groups": self.groups, "normalize": self.normalize, "role": self.role}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(bits={self.bits}, role={self.role!r}, granularity={self.granularity!r})"


def keep_finite(new, old):
    """`new` where it is finite, else `old` (a NaN/inf statistic must not become state)."""
    return ops.where(ops.isfinite(new), new, ops.convert_to_tensor(old))


def positive(x, floor=1e-8):
    """`x` floored at a small positive value: a learnt step / clip value that training drives
    to 0 or below must not turn the quantizer into inf/NaN (gradient unchanged above it)."""
    return ops.maximum(x, floor)


def sign(x):
    """+1 / -1 with sign(0) = +1 (binary levels never take 0)."""
    return ops.where(x >= 0, 1.0, -1.0)


def abs_mean(x, axis=None):
    return ops.mean(ops.abs(x), axis=axis)


def abs_max(x, axis=None):
    return ops.max(ops.abs(x), axis=axis)


# id -> variable of every learnable-or-not quantizer parameter (`add_param`), for
# `is_quantizer_parameter`: identity, not a name suffix.
_PARAMETERS = weakref.WeakValueDictionary()


def is_quantizer_parameter(variable):
    """True for a variable a quantizer created with `add_param` (step, alpha, basis, ...)."""
    return _PARAMETERS.get(id(variable)) is variable


# name -> class of every quantization method, filled by `@register` where each is defined.
REGISTRY = {}


def register(cls):
    """Class decorator: add a quantizer to `REGISTRY` under `cls.name` and register it for
    Keras serialization (package `quadkeras`)."""
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"Invalid quantizer name {cls.name!r} for {cls.__name__}: expected a new, "
                         f"non-empty name (taken: {', '.join(REGISTRY)}).")
    REGISTRY[cls.name] = cls
    return keras.saving.register_keras_serializable(package="quadkeras")(cls)
