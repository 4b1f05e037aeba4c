"""`Quantizer`: the one base class of every quantization method.

A quantizer is a small Keras layer that owns its variables (LSQ's `step`, PACT's `alpha`,
FakeQuant's `min`/`max`, ...). The layer that uses it (usually
`quadkeras.quantize.QuantizeWrapper`) holds it as an attribute, so the quantizer's variables
are saved with the model, seen by the optimizer and found at `<host>/<slot>/<variable>`
(e.g. `conv1/kernel/step`). Build it like any layer, `quantizer.build(input_shape)` for
activations, or `quantizer.build_from_value(kernel)` for a weight: data-dependent parameters
(LSQ's step, FakeQuant's range) are then initialised from the value, and activations' from
the first training batch.

Shared here, once: bit-width checks and the range checks of every numeric option
(`quadkeras.quantizers.options`, through `Quantizer.number`: one-line errors naming the option
and its allowed range),
signed/unsigned, per-tensor / per-channel / grouped
statistics and parameters (channels are the last axis), optional var-mean weight
normalisation, first-training-batch initialisation of data-dependent parameters, and the
state contract: every quantizer variable is created with `autocast=False` (kept in float32
and really assigned under a `mixed_*` policy, also on torch), updates computed from
non-finite statistics are skipped (the old value is kept), the math runs in float32 and the
output has the input's dtype. Methods override only `_build` (their variables) and
`fake_quantize` (their math); `@register` makes a method known by its `method` name.

Example:

>>> import numpy as np, keras
>>> from quadkeras.quantizers import get
>>> q = get("lsq:4")
>>> q.build_from_value(np.ones((3, 3, 2, 4), "float32"))
>>> [v.name for v in q.weights], q.role
(['step'], 'weight')
"""

import contextlib
import weakref

import keras
from keras import ops

from quadkeras import backend
from quadkeras.quantizers.options import check_bits, check_number
from quadkeras.utils.concrete import concrete_value
from quadkeras.utils.validation import check_choice, check_positive_int

GRANULARITIES = ("per_tensor", "per_channel", "groups")
ROLES = ("weight", "activation")
NORMALIZATIONS = (None, "var_mean")

# `Quantizer.init_state`, the one state of its data-dependent parameters. PENDING: calls trace
# the first-batch `cond` on the saved `initialized` variable (0 until a finite batch set them);
# INITIALIZED: they hold their values (or there are none); LOADED: an older file's host layer
# assigned them (the quantizer's own empty entry is skipped, then `initialized` is read).
PENDING, INITIALIZED, LOADED = INIT_STATES = ("pending", "initialized", "loaded")


class Quantizer(keras.layers.Layer):
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
        **kwargs: Keras layer arguments (`name`: the host names it after its slot, e.g.
            `kernel`; `dtype` defaults to float32: the math never runs in half precision).
    """

    method = None  # the registered name ("lsq", "pact", ...), set by each method
    allowed_bits = tuple(range(2, 9))
    weight_granularity = "per_tensor"  # the method's default for weights (activations: per tensor)
    var_mean_axes = "channel"  # var-mean statistics per "channel" or per quantization "group"
    var_mean_detached = False  # True: no gradient through the var-mean statistics
    # Post-training calibration (`quadkeras.quantize.calibration`): when set, inference calls
    # hand the input to `observer(quantizer, x)` and pass it through unquantized.
    observer = None
    # True: the quantizer holds the weight itself (BSQ's bit planes): its host freezes the
    # layer's own variable and computes with what the quantizer returns.
    holds_value = False
    # False: a depthwise kernel is handed over in the layer's own layout, not as (kh, kw, 1, C*M).
    kernel_view = True

    def __init__(self, bits=8, signed=None, granularity=None, groups=None, normalize=None, role=None,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.bits = check_bits(self.method, bits, self.allowed_bits)
        self._signed = None if signed is None else bool(signed)
        if granularity is not None:
            check_choice("granularity", granularity, GRANULARITIES)
        self.granularity = granularity
        if granularity == "groups":
            check_positive_int("groups", groups)
        self.groups = groups
        self.normalize = check_choice("normalize", normalize, NORMALIZATIONS)
        self.role = None if role is None else check_choice("role", role, ROLES)
        self._value_at_build = None
        self.init_state = PENDING  # set by `build` (see INIT_STATES)
        self.initialized_var = None  # the saved state, made by `build` when data must initialise
        self._first_batch_values = None  # {name: value} during a call that initialises from data

    def current_bits(self):
        """The bit width this quantizer quantizes to now (`bits`; BSQ: the learnt precision)."""
        return self.bits

    def number(self, name, value, allowed):
        """A method's numeric option checked against its `Interval` (one-line error naming
        the option, this method and the range); returns it as a float."""
        return check_number(self.method, name, value, allowed)

    # -------------------------------------------------------------- properties
    @property
    def signed(self):
        if self._signed is not None:
            return self._signed
        return self.role != "activation"

    def _default_granularity(self, shape):
        return self.weight_granularity if self.role == "weight" else "per_tensor"

    # -------------------------------------------------------------------- build
    def build(self, input_shape):
        """Create this quantizer's variables for inputs of `input_shape`.

        Data-dependent parameters are initialised from the first training batch (a variable
        `initialized` records it, `init_state` mirrors it), or from a value: see
        `build_from_value`.
        """
        value = self._value_at_build
        if self.role is None:
            self.role = "weight" if value is not None else "activation"
        self.shape = tuple(input_shape)
        if self.granularity is None:
            self.granularity = self._default_granularity(self.shape)
        self.channels = self.shape[-1]
        if self.granularity == "groups" and (self.channels is None or self.channels % self.groups):
            raise ValueError(
                f"Invalid groups={self.groups} for {self.name}: expected a divisor of the "
                f"channel count {self.channels}."
            )
        self.param_shape = {"per_tensor": (), "per_channel": (self.channels,),
                            "groups": (self.groups,)}[self.granularity]
        self.params = {}
        self._data_inits = {}
        self.initialized_var = None
        self.init_state = INITIALIZED
        self._build(self.shape)
        if self._data_inits:
            if value is not None:
                self.initialize(self.data_init_values(self._prepare(ops.convert_to_tensor(value))))
            else:
                self.initialized_var = self.add_weight(name="initialized", shape=(), initializer="zeros",
                                                       trainable=False, autocast=False)
                self.init_state = PENDING

    def build_from_value(self, value):
        """Build for `value`'s shape (role `weight` unless set) and initialise the
        data-dependent parameters from `value` (e.g. LSQ's step from the kernel)."""
        value = ops.convert_to_tensor(value)
        if isinstance(value, keras.Variable):  # TF hands variables back: a copy is not tracked
            value = ops.copy(value)
        self._value_at_build = value
        try:
            self.build(tuple(value.shape))
        finally:
            self._value_at_build = None

    def get_build_config(self):
        # The host builds its quantizers (shape and value come from it), never Keras' loader.
        return None

    def _build(self, shape):
        """Subclasses create their variables here (use `self.add_param`; they are then listed
        in `self.params`, {name: variable})."""

    def add_param(self, name, initializer="zeros", trainable=True, extra_shape=(), data_init=None):
        """Add a variable of shape `param_shape + extra_shape` called `name`.

        `data_init(x)` (optional) computes its initial value from data: from the value
        given to `build_from_value`, else from the first training batch. `autocast=False`:
        the variable stays float32 under mixed precision, so assignments in `call` stick.
        """
        var = self.add_weight(name=name, shape=self.param_shape + tuple(extra_shape),
                              initializer=initializer, trainable=trainable, autocast=False)
        self.params[name] = var
        _PARAMETERS[id(var)] = var
        if data_init is not None:
            self._data_inits[name] = data_init  # string keys: TF's SavedModel tracks this dict
        return var

    # --------------------------------------------------------------------- call
    def __call__(self, x, training=None):
        x = ops.convert_to_tensor(x)
        dtype = keras.backend.standardize_dtype(x.dtype)
        if self._direct_call(x, training):
            # what Keras' `Layer.__call__` would do here, without its per-call bookkeeping
            # (signature binding, name scope, masks, tree walks: ~55 us a call on torch)
            y = self.call(x if dtype == self.compute_dtype else ops.cast(x, self.compute_dtype),
                          training=training)
        else:
            y = super().__call__(x, training=training)  # inputs cast to float32 (the layer's dtype)
        return y if keras.backend.standardize_dtype(y.dtype) == dtype else ops.cast(y, dtype)

    def _direct_call(self, x, training):
        """True where `call` can run without Keras' `Layer.__call__`: on torch (eager, or
        traced by torch.compile: one graph break less per quantizer), built, a concrete
        tensor, `training` given (the host passes its resolved value; None would be resolved
        from the call context). TF and JAX trace the step once, so the bookkeeping costs
        nothing per step there and stays."""
        return (training is not None and self.built and backend.active().DIRECT_LAYER_CALL
                and not isinstance(x, keras.KerasTensor))

    def call(self, x, training=None):
        if self.observer is not None and not training:
            self.observer(self, self._prepare(x))
            return x
        x, training = self._prepare(x), bool(training)
        if self.init_state != PENDING:
            return self.fake_quantize(x, training)
        self._first_batch_values = self._first_batch(x, training)
        try:
            return self.fake_quantize(x, training)
        finally:
            self._first_batch_values = None

    def compute_output_shape(self, input_shape):
        return input_shape

    def fake_quantize(self, x, training):
        """Subclasses: the fake-quantized tensor (float32, same shape as x)."""
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

    def param(self, var):
        """The value of parameter `var` in this call (`fake_quantize` reads parameters here): the
        first batch's (`_first_batch`) while `init_state` is pending, else the variable. Once
        initialised (`initialize_quantizers`, calibration, a loaded file, or an eager step that
        did it), calls trace no `cond`, check or assignment for it."""
        values = self._first_batch_values
        if values is not None and var.name in values and self.params.get(var.name) is var:
            return values[var.name]
        return ops.convert_to_tensor(var)

    def data_init_values(self, x):
        """Observe a batch: {name: value} of every data-dependent parameter computed from `x`
        (prepared input, or the value given to `build_from_value`)."""
        return {name: ops.cast(fn(x), self.params[name].dtype) for name, fn in self._data_inits.items()}

    def initialize(self, values):
        """The one setter of data-driven parameters (at build from a value, first batch, and
        `quadkeras.quantize.observe.set_parameters`): assign `values` ({name: value}) and record
        them initialised; a non-finite value is not used (it keeps its value, the state stays
        pending). Runs traced too; returns the values in use."""
        used, ok_all = {}, None
        for name, value in values.items():
            var = self.params[name]
            value = ops.cast(value, var.dtype)
            ok = ops.all(ops.isfinite(value))
            value = ops.where(ok, value, ops.convert_to_tensor(var))
            var.assign(ops.stop_gradient(value))
            used[name] = value
            ok_all = ok if ok_all is None else ops.logical_and(ok_all, ok)
        if self.initialized_var is None:
            self.init_state = INITIALIZED
            return used
        done = 1.0 if ok_all is None else ops.where(ok_all, 1.0, ops.convert_to_tensor(self.initialized_var))
        self.initialized_var.assign(done)
        if concrete_value(done) == 1.0:  # known now (eager): later calls skip the branch
            self.init_state = INITIALIZED
        return used

    def _first_batch(self, x, training):
        """{name: value} of the data-dependent parameters in a call while `init_state` is
        pending, under one `cond` on `initialized`: observed from `x` (gradient 0, not None)
        while it is 0, else the stored values; set (`initialize`) in training only. JAX's
        trainer drops assignments to trainable variables made in `call`: there the
        initializer value stays (`initialize_quantizers` before `fit`)."""
        def observed():
            return {name: ops.stop_gradient(value) + 0.0 * self.params[name]
                    for name, value in self.data_init_values(x).items()}

        def stored():
            return {name: ops.convert_to_tensor(self.params[name]) for name in self._data_inits}

        values = ops.cond(ops.equal(self.initialized_var, 0.0), observed, stored)
        return self.initialize(values) if training else values

    def read_init_state(self):
        """Set `init_state` from the saved `initialized` variable (after something assigned it
        outside a call: loading weights, a compiled step); eager only."""
        self.init_state = PENDING if self.awaiting_data_init else INITIALIZED

    @property
    def awaiting_data_init(self):
        """True while data-dependent parameters wait for their first training batch."""
        return self.initialized_var is not None and float(ops.convert_to_numpy(self.initialized_var)) == 0.0

    @contextlib.contextmanager
    def stored_parameters_only(self):
        """Within the block, calls use the stored parameters, no first-batch `cond` (export:
        it would make ranges depend on the input); after training they hold the same values.
        On exit `init_state` is read back from the `initialized` variable."""
        self.init_state = INITIALIZED
        try:
            yield self
        finally:
            self.read_init_state()

    def data_init_variables(self):
        """The variables the first-batch initialisation assigns (`initialized` included)."""
        found = [self.params[name] for name in self._data_inits]
        return found + ([self.initialized_var] if self.initialized_var is not None else [])

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
        params = max(1, _size(self.param_shape))
        # the build shape first: its known sizes are Python ints, so a compiled step
        # (torch.compile, XLA) sees a constant instead of a symbolic or traced size
        for shape in (getattr(self, "shape", None), None if x is None else x.shape):
            if shape is None:
                continue
            dims = list(tuple(shape)[1:] if self.role == "activation" else shape)
            if None not in dims:
                return max(1, _size(dims) // params) if dims else 1
        if x is None:
            raise ValueError(f"Invalid shape {self.shape} for elements_per_param: expected known "
                             "dimensions, or pass the runtime tensor x.")
        shape = tuple(x.shape)
        dims = list(shape[1:] if self.role == "activation" else shape)
        total = ops.convert_to_tensor(1.0)
        for d in ops.shape(x)[len(shape) - len(dims):]:
            total = total * ops.cast(d, "float32")
        return ops.maximum(total / float(params), 1.0)

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "signed": self._signed,
                "granularity": self.granularity, "groups": self.groups,
                "normalize": self.normalize, "role": self.role}

    def load_own_variables(self, store):
        if not (self.init_state == LOADED and not len(store.keys())):
            # (else an older file kept these variables on the host layer, which loaded them)
            super().load_own_variables(store)
        self.read_init_state()

    def __repr__(self):
        return (f"{type(self).__name__}(bits={self.bits}, role={self.role!r}, "
                f"granularity={self.granularity!r}, name={self.name!r})")


def keep_finite(new, old):
    """`new` where it is finite, else `old` (a NaN/inf statistic must not become state)."""
    return ops.where(ops.isfinite(new), new, ops.convert_to_tensor(old))


def _size(dims):
    """The product of known sizes as a Python int (a plain loop: torch.compile traces it)."""
    size = 1
    for d in dims:
        size *= int(d)
    return size


POSITIVE_FLOOR = 1e-8  # the smallest step / clip value `positive` lets through


def positive(x, floor=POSITIVE_FLOOR):
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
    """Class decorator: add a quantizer to `REGISTRY` under `cls.method` and register it for
    Keras serialization (package `quadkeras`)."""
    if not cls.method or cls.method in REGISTRY:
        raise ValueError(f"Invalid quantizer method {cls.method!r} for {cls.__name__}: expected a "
                         f"new, non-empty name (taken: {', '.join(REGISTRY)}).")
    REGISTRY[cls.method] = cls
    return keras.saving.register_keras_serializable(package="quadkeras")(cls)
