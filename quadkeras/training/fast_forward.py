"""A fast eager forward for built functional models on the torch backend (issue #26).

Keras' `Functional.call` runs each layer of the graph through `Layer.__call__`: signature
binding, name scopes, masks, input dtype checks and tree walks, ~50 us a layer on torch,
most of an overhead-bound eager step (docs/speed.md, "Where the torch eager step goes").
`fast_torch_forward(model)` gives a built functional model (and the functional models nested
in it) a `call` that walks the same graph in the same order and calls each built layer's
`call` directly, keeping what `Layer.__call__` does that changes the result:

- `training`: passed, as Keras' `Functional.call` does, to each layer whose call takes it;
- mixed precision: float inputs cast to the layer's input dtype, and the layer runs in the
  autocast scope `Layer.__call__` would open (variables read in its compute dtype);
- losses: `add_loss` inside a call lands in `model.losses` as before (the model's own
  `__call__`, still Keras', clears them per call);

and, for the hottest float32 layers (Conv2D, BatchNormalization, ReLU, Add, Dense, LSQ
quantize wrappers: `quadkeras.training.torch_layers`), computes their `call` in raw torch on the
variables' own tensors (outside a `StatelessScope` and a 16-bit autocast scope; any input or
state they do not cover runs the layer's `call`). It leaves to Keras, per layer, what it
does not replicate: a layer that overrides `__call__` (quadkeras' quantizers, which shortcut
it themselves), an unbuilt layer, an activity regularizer, a Keras-quantized or rematerialised layer, a non-float layer, a layer
with call-context arguments other than `training`, nested models (they run their own fast
call). The whole model runs Keras' own `Functional.call` when a mask is involved (the graph
built one, or a mask comes in), `training` is None, extra call arguments are given, a
`keras.distribution` is set, or no Keras call context is open. Only the torch backend is
eager per step; TF and JAX trace the step once, so the bookkeeping there costs nothing per step.

`quadkeras.training.train` turns it on for torch runs, eager and compiled: a compiled step
(`jit_compile=True`) does not pay the bookkeeping per step, but dynamo traces it once, and
tracing the fast forward instead of Keras' `Functional.call` takes ~3x less of the first
step (ResNet-20: 88 s of dynamo time instead of 253 s; the same graphs, no added break, no
recompile per step: `tests/test_torch_compile.py`). `fast_torch_forward(model, False)` turns
it off. It is an attribute of the model object only: `model.save` writes the
same file and a loaded model runs Keras' path until turned on.

It also turns on (and off) the model's fast eager train step
(`quadkeras.training.fast_step`: Keras' step without its per-step walks over the layer
tree), for any Keras model on torch, so one call after `model.compile` gives `model.fit`
both.

Example:

>>> import keras
>>> from quadkeras.training import fast_torch_forward
>>> inputs = keras.Input((4,))
>>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(3)(inputs)))
>>> fast_torch_forward(model) == (keras.backend.backend() == "torch")
True
>>> tuple(model(keras.ops.ones((2, 4)), training=True).shape)
(2, 2)
>>> fast_torch_forward(model, False)
False
"""

import types
import weakref

import keras

from quadkeras.backend import active as active_backend
from quadkeras.backend import keras_private
from quadkeras.training.fast_step import fast_torch_train_step

_PLANS = weakref.WeakKeyDictionary()  # functional model -> its _Plan (None: run Keras' path)
_DTYPE_NAMES = {}  # backend dtype object -> Keras dtype name


def fast_torch_forward(model, enabled=True):
    """Turn the fast forward of `model` on (`enabled=True`) or off; True when it is on.

    On a backend other than torch, or for a model without a functional graph (a subclassed
    model), nothing changes and False comes back. Functional models nested in `model` are
    switched with it, and so is the fast eager train step (`fast_step.fast_torch_train_step`).
    Call it after building the model; it is safe to call again.
    """
    fast_torch_train_step(model, enabled)  # and the eager step's bookkeeping (any model)
    graphs = _graphs(model)
    on = bool(enabled) and active_backend().DIRECT_LAYER_CALL and bool(graphs)
    for graph in graphs:
        _PLANS.pop(graph, None)
        if on:  # an instance attribute: bypasses Keras' and torch's attribute tracking
            object.__setattr__(graph, "call", types.MethodType(_fast_call, graph))
        elif is_fast_torch_forward(graph):
            del graph.__dict__["call"]
    return on


def is_fast_torch_forward(model):
    """True when `model`'s functional graph runs the fast forward."""
    graph = keras_private.functional_of(model)
    call = getattr(graph, "__dict__", {}).get("call")
    return getattr(call, "__func__", None) is _fast_call


def _graphs(model, seen=None):
    """`model`'s functional graph and those nested in it (each once)."""
    seen = set() if seen is None else seen
    graph = keras_private.functional_of(model)
    if graph is None or id(graph) in seen:
        return []
    seen.add(id(graph))
    found = [graph]
    for layer in graph.layers:
        found += _graphs(layer, seen)
    return found


def _fast_call(self, inputs, training=None, mask=None, **kwargs):
    plan = _plan(self) if training is not None and mask is None and not kwargs else None
    if (plan is None or keras.distribution.distribution() is not None
            or not keras_private.in_layer_call()):
        return type(self).call(self, inputs, training=training, mask=mask, **kwargs)
    flat = keras_private.standardize_functional_inputs(self, inputs)
    if any(keras_private.keras_mask(x) is not None for x in flat):
        return type(self).call(self, inputs, training=training, mask=mask, **kwargs)
    values = [None] * plan.slots
    for slot, x in zip(plan.input_slots, flat):
        values[slot] = x
    scope = keras_private.current_autocast_dtype()
    # raw-torch layer forwards read the variables' own float32 tensors: not inside a
    # StatelessScope (the values live in the scope) or a 16-bit autocast scope
    native = (not (scope[0] and scope[1] != "float32")
              and not keras_private.in_stateless_scope())
    for step in plan.steps:
        step.run(values, training, scope, native)
    outputs = [values[slot] for slot in plan.output_slots]
    if plan.single_output:
        return outputs[0]
    outputs = keras.tree.pack_sequence_as(plan.outputs_struct, outputs)
    return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs


def _plan(graph):
    """The cached plan of `graph`, made on its first call once every layer is built."""
    if graph in _PLANS:
        return _PLANS[graph]
    plan = _Plan.make(graph)
    if plan is not False:  # False: a layer is not built yet; try again on the next call
        _PLANS[graph] = plan
    return plan or None


class _Plan:
    """The graph as a list of `_Step`s over numbered value slots."""

    def __init__(self, steps, slots, input_slots, output_slots, outputs_struct):
        self.steps, self.slots = steps, slots
        self.input_slots, self.output_slots = input_slots, output_slots
        self.outputs_struct = outputs_struct
        self.single_output = len(output_slots) == 1 and isinstance(
            outputs_struct, keras.KerasTensor)

    @classmethod
    def make(cls, graph):
        """A plan, None (the graph needs Keras' path: masks) or False (not built yet)."""
        inputs, outputs, outputs_struct = keras_private.functional_io(graph)
        slot_of = {id(x): i for i, x in enumerate(inputs)}
        steps = []
        for op, args, kwargs, node_outputs in keras_private.functional_steps(graph):
            if isinstance(op, keras.Layer) and not op.built:
                return False
            symbolic = [x for x in keras.tree.flatten((args, kwargs))
                        if isinstance(x, keras.KerasTensor)]
            if any(keras_private.keras_mask(x) is not None for x in symbolic + node_outputs):
                return None
            if any(id(x) not in slot_of for x in symbolic):
                continue  # not computable from the inputs: Keras skips it too
            for x in node_outputs:
                slot_of[id(x)] = len(slot_of)
            steps.append(_Step(op, args, kwargs, [slot_of[id(x)] for x in node_outputs], slot_of))
        if any(id(x) not in slot_of for x in outputs):
            return None  # Keras says which output is not connected
        return cls(steps, len(slot_of), list(range(len(inputs))),
                   [slot_of[id(x)] for x in outputs], outputs_struct)


def _direct(op):
    """True where `op.call` can stand in for `op.__call__` (see the module docstring)."""
    return (isinstance(op, keras.Layer) and type(op).__call__ is keras.Layer.__call__
            and op.built and keras_private.functional_of(op) is None
            and not isinstance(op, keras.Model) and op.activity_regularizer is None
            and getattr(op, "quantization_mode", None) is None
            and not keras_private.rematerialized(op)
            and keras.backend.is_float_dtype(op.compute_dtype)
            and keras_private.call_context_args(op)[1] <= {"training"})


def _dtype_name(dtype):
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = keras.backend.standardize_dtype(dtype)
    return name


class _Step:
    """One node: its operation, how to fill its arguments from the slots, where its outputs go."""

    def __init__(self, op, args, kwargs, out_slots, slot_of):
        self.op, self.out_slots = op, out_slots
        self.direct = _direct(op)
        self.call = op.call if self.direct else op
        # Functional.call gives `training` to each layer that propagates it; Layer.__call__
        # passes it on to `call` where `call` takes it
        names, accepted = (keras_private.call_context_args(op) if isinstance(op, keras.Layer)
                           else (set(), set()))
        self.takes_training = "training" in (accepted if self.direct else names)
        self.cast_to = (op.input_dtype if self.direct and op.autocast
                        and keras_private.converts_inputs(op) else None)
        self.autocast, self.compute_dtype = getattr(op, "autocast", True), getattr(op, "compute_dtype", None)
        self.mixed = self.direct and op.compute_dtype != op.variable_dtype
        self.kw_tensors = any(isinstance(x, keras.KerasTensor) for x in keras.tree.flatten(kwargs))
        # one tensor, constant keyword arguments (a BatchNormalization node records mask=None)
        self.single = (len(args) == 1 and not self.kw_tensors
                       and isinstance(args[0], keras.KerasTensor))
        self.constant_kwargs = dict(kwargs) if self.single else None
        # one list of tensors (Add, Concatenate, ...): filled without Keras' tree walk
        self.listed = (not self.single and len(args) == 1 and not kwargs
                       and type(args[0]) in (list, tuple) and len(args[0]) > 0
                       and all(isinstance(x, keras.KerasTensor) for x in args[0]))
        # a raw-torch forward of the layer (`quadkeras.training.torch_layers`): float32 layers
        # with one tensor (or one list) in, one out, and no keyword argument but a None mask
        self.native = None
        if (self.direct and not self.mixed and op.compute_dtype == "float32"
                and len(out_slots) == 1 and (self.listed or (self.single and all(
                    v is None for v in self.constant_kwargs.values())))):
            from quadkeras.training.torch_layers import native_layer_call  # torch only

            self.native = native_layer_call(op)
        if self.single:
            self.slot = slot_of[id(args[0])]
        elif self.listed:
            self.list_type, self.slots = type(args[0]), [slot_of[id(x)] for x in args[0]]
        else:
            flat = keras.tree.flatten((args, kwargs))
            self.template = (args, kwargs)
            self.fill = [slot_of[id(x)] if isinstance(x, keras.KerasTensor) else None for x in flat]
            self.constants = flat

    def _arguments(self, values):
        if self.single:
            return [values[self.slot]], dict(self.constant_kwargs)
        if self.listed:
            return [self.list_type(values[s] for s in self.slots)], {}
        flat = [c if s is None else values[s] for s, c in zip(self.fill, self.constants)]
        args, kwargs = keras.tree.pack_sequence_as(self.template, flat)
        return list(args), dict(kwargs)

    def _cast(self, x):
        if keras.ops.is_tensor(x):
            name = _dtype_name(x.dtype)
            if name != self.cast_to and keras.backend.is_float_dtype(name):
                return keras.ops.cast(x, self.cast_to)
        return x

    def _scope_dtype(self, scope):
        """The autocast scope `Layer.__call__` opens for the layer (False: none)."""
        active, dtype = scope
        if active:
            if not self.autocast or not keras.backend.is_float_dtype(self.compute_dtype):
                return None
            return self.compute_dtype if dtype != self.compute_dtype else False
        return self.compute_dtype if self.mixed else False

    def run(self, values, training, scope, native=False):
        if native and self.native is not None:
            y = self.native(values[self.slot] if self.single else [values[s] for s in self.slots],
                            training)
            if y is not None:
                values[self.out_slots[0]] = y
                return
        args, kwargs = self._arguments(values)
        if self.takes_training:
            kwargs["training"] = training
        if not self.direct:
            outputs = self.call(*args, **kwargs)
        else:
            if self.cast_to is not None:  # Layer.__call__'s input conversion
                if self.single:
                    args = [self._cast(args[0])]
                elif self.listed:
                    args = [self.list_type(self._cast(x) for x in args[0])]
                else:
                    args = keras.tree.map_structure(self._cast, args)
                kwargs = keras.tree.map_structure(self._cast, kwargs) if self.kw_tensors else kwargs
            new_scope = self._scope_dtype(scope)
            if new_scope is False:
                outputs = self.call(*args, **kwargs)
            else:
                with keras_private.autocast_scope(new_scope):
                    outputs = self.call(*args, **kwargs)
        if len(self.out_slots) == 1:
            values[self.out_slots[0]] = outputs if keras.ops.is_tensor(outputs) else keras.tree.flatten(outputs)[0]
        else:
            for slot, y in zip(self.out_slots, keras.tree.flatten(outputs)):
                values[slot] = y
