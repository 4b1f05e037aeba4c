"""Every private Keras API quadkeras relies on, each behind one named function.

Keras 3 keeps the functional graph, the optimizer's hooks and some helpers outside its public
API. quadkeras reads them ONLY through this module, so a Keras upgrade that moves one fails
here (and in `tests/test_backend_package.py`, which calls each accessor on a tiny model),
not somewhere deep in a training run. pyproject.toml pins Keras to the tested minor version.

Example:

>>> import keras
>>> inputs = keras.Input((3,))
>>> dense = keras.layers.Dense(2)
>>> model = keras.Model(inputs, keras.layers.ReLU()(dense(inputs)))
>>> [type(layer).__name__ for layer in consumers(dense)]
['ReLU']
"""

import keras
from keras.src.backend.common import global_state as _global_state
from keras.src.backend.common import variables as _variables
from keras.src.models.functional import Functional as _Functional
from keras.src.utils import naming as _naming

try:  # keras.src.backend.common.stateless_scope: without it every update takes `assign`
    from keras.src.backend.common.stateless_scope import in_stateless_scope as _in_stateless_scope
except ImportError:  # pragma: no cover
    _in_stateless_scope = None

# The private `keras.optimizers.Optimizer` methods `CoupledDecaySGD` overrides (the last one
# exists on the tensorflow backend only).
OPTIMIZER_HOOKS = ("_backend_update_step", "_clip_gradients")
TF_OPTIMIZER_HOOKS = ("_all_reduce_sum_gradients",)


def in_stateless_scope():
    """True inside a Keras `StatelessScope` (variables must not be written in place); wraps
    `keras.src.backend.common.stateless_scope.in_stateless_scope` (True where it is missing)."""
    return True if _in_stateless_scope is None else bool(_in_stateless_scope())


def raw_value(variable):
    """The backend tensor a Keras variable holds (`variable._value`: not the autocast copy
    `variable.value` may return), or None where the variable has none."""
    return getattr(variable, "_value", None)


def kernel_variable(layer):
    """The kernel variable of a Keras Conv / Dense layer (`layer._kernel`: its `kernel`
    property adds LoRA and quantization logic on top)."""
    return layer._kernel


def consumers(layer):
    """The operations that consume `layer`'s output in its functional model(s): the
    `operation` of each of `layer._outbound_nodes`."""
    return [node.operation for node in layer._outbound_nodes]


def graph_nodes(model):
    """Every node of a functional `model`, depth by depth (`model._nodes_by_depth`)."""
    return [node for nodes in model._nodes_by_depth.values() for node in nodes]


def producer(tensor):
    """The operation that produced a symbolic Keras tensor (`tensor._keras_history.operation`)."""
    return tensor._keras_history.operation


def sublayers(layer):
    """The list of a layer's tracked sublayers, in creation order (`layer._layers`; mutable:
    its order is the order of `layer.weights`)."""
    return layer._layers


def variable_index(optimizer, variable):
    """The slot of `variable` in the optimizer's per-variable lists (`momentums`, ...):
    `optimizer._get_variable_index(variable)`."""
    return optimizer._get_variable_index(variable)


def optimizer_update_step(cls, optimizer, grads, variables, learning_rate):
    """Keras' own update of `variables` for `cls` (a Keras optimizer class, e.g.
    `keras.optimizers.SGD`): `cls._backend_update_step(optimizer, ...)`, as `super()` would
    call it from a direct subclass of `cls`."""
    return cls._backend_update_step(optimizer, grads, variables, learning_rate)


def optimizer_clip_gradients(cls, optimizer, grads):
    """Keras' clipping (`clipnorm` / `clipvalue` / `global_clipnorm`) of `cls`:
    `cls._clip_gradients(optimizer, grads)`."""
    return cls._clip_gradients(optimizer, grads)


def compute_loss(model, x, y, y_pred, sample_weight):
    """The training loss of `model` (`model._compute_loss(..., training=True)`, what Keras'
    own `train_step` calls)."""
    return model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)


def track_loss(model, loss, batch_size):
    """Record `loss` in the `loss` metric of `model` (`model._loss_tracker.update_state`)."""
    model._loss_tracker.update_state(loss, sample_weight=batch_size)


def op_name_uniquifier():
    """The function that names new Keras operations from a global counter
    (`keras.src.utils.naming.uniquify`)."""
    return _naming.uniquify


def check_optimizer_hooks(cls=keras.optimizers.SGD):
    """The hooks `CoupledDecaySGD` overrides that `cls` lacks on this backend (empty: all exist)."""
    hooks = OPTIMIZER_HOOKS + (TF_OPTIMIZER_HOOKS if keras.backend.backend() == "tensorflow" else ())
    return [hook for hook in hooks if not callable(getattr(cls, hook, None))]


# ----------------------------------------------------------- functional graph (fast forward)
# `quadkeras.training.fast_forward` runs a built functional model's graph itself on torch; the
# node structure, the input standardisation and the autocast scope it needs are private.

def functional_of(model):
    """The `Functional` graph model that runs `model`'s call: `model` itself when it is a
    `Functional` (`keras.Model(inputs, outputs)`), a built `Sequential`'s inner
    `model._functional`, else None (a subclassed model has no graph)."""
    if isinstance(model, _Functional):
        return model
    inner = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else None
    return inner if isinstance(inner, _Functional) else None


def functional_steps(model):
    """The steps of a `Functional` `model`'s graph walk, in Keras' order (deepest nodes first,
    as `Function._run_through_graph`): one `(operation, args, kwargs, outputs)` per non-input
    node, `args` / `kwargs` the call's symbolic arguments (`node.arguments`) and `outputs`
    the node's flat list of symbolic outputs."""
    steps = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation and not node.is_input:
                steps.append((model._get_operation_for_node(node), node.arguments.args,
                              node.arguments.kwargs, list(node.outputs)))
    return steps


def functional_io(model):
    """`(inputs, outputs, outputs_struct)` of a `Functional` model: the flat symbolic inputs
    and outputs and the nested structure its call returns (`model._outputs_struct`)."""
    return list(model.inputs), list(model.outputs), model._outputs_struct


def standardize_functional_inputs(model, inputs):
    """What `Functional.call` does to its inputs first (`model._standardize_inputs`): a flat
    list of tensors in the inputs' dtypes, rank-adjusted, from a tensor, list or dict."""
    return model._standardize_inputs(inputs)


def call_context_args(layer):
    """The call-context arguments (`training`, ...) Keras propagates through `layer`'s call
    (`layer._call_context_args`), and the subset its `call` takes, which `Layer.__call__`
    passes to it (`layer._call_has_context_arg`)."""
    names = set(getattr(layer, "_call_context_args", ()))
    accepted = getattr(layer, "_call_has_context_arg", {})
    return names, {name for name in names if accepted.get(name, False)}


def keras_mask(x):
    """The Keras mask a tensor carries (`x._keras_mask`), or None."""
    return getattr(x, "_keras_mask", None)


def autocast_scope(dtype):
    """A Keras `AutocastScope(dtype)` (float variables read inside are cast to `dtype`;
    None: no cast)."""
    return _variables.AutocastScope(dtype)


def current_autocast_dtype():
    """`(active, dtype)` of the Keras autocast scope in force (`get_autocast_scope()`):
    `(False, None)` outside any scope."""
    scope = _variables.get_autocast_scope()
    return (False, None) if scope is None else (True, scope.dtype)


def in_layer_call():
    """True inside some Keras `Layer.__call__` (a call context is open: `training` resolves
    from it and the entry layer cleared the losses of its last call)."""
    return _global_state.get_global_attribute("current_call_ctx") is not None


def converts_inputs(layer):
    """Whether `Layer.__call__` casts `layer`'s float inputs to its input dtype
    (`layer._convert_input_args`)."""
    return bool(getattr(layer, "_convert_input_args", True))


def rematerialized(layer):
    """Whether `layer` recomputes its call in the backward pass (`layer._remat_mode`)."""
    return bool(getattr(layer, "_remat_mode", None))


# --------------------------------------------------- the model's layer tree (fast train step)
# `quadkeras.training.fast_step` makes Keras' per-step walks over the layer tree once: the
# lists it reads and the loss helpers of Keras' `compute_loss` are private.

def flat_layers(model):
    """`model` and every layer under it, each once, in Keras' order (`model._flatten_layers()`:
    the order `model.losses` collects their `add_loss` losses in)."""
    return model._flatten_layers()


def tree_stamp(layers):
    """What changes when a layer gains or loses a sublayer or a variable: the lengths of each
    layer's `_layers`, `_trainable_variables` and `_non_trainable_variables` lists."""
    return [(len(layer._layers), len(layer._trainable_variables),
             len(layer._non_trainable_variables)) for layer in layers]


def own_losses(layer):
    """The losses `layer.add_loss` recorded in its last call, outside a `StatelessScope`
    (`layer._losses`)."""
    return layer._losses


def clear_own_losses(layers):
    """Forget each layer's recorded losses (`Layer._clear_losses` without its recursion, for a
    flat list of layers; outside a `StatelessScope` only)."""
    for layer in layers:
        layer._losses.clear()
        layer._loss_ids.clear()


def keras_clear_losses(layer):
    """Keras' own `Layer._clear_losses` of `layer` (recursive; `StatelessScope`-aware)."""
    keras.Layer._clear_losses(layer)


def call_takes_training(model):
    """Whether Keras' train step passes `training=True` to `model`'s call
    (`model._call_has_training_arg`)."""
    return bool(model._call_has_training_arg)


def compiled_loss(model):
    """The loss `model.compile(loss=...)` set (`model._compile_loss`: a callable of
    `(y, y_pred, sample_weight)`), or None."""
    return model._compile_loss


def aggregate_added_loss(model, loss):
    """An `add_loss` or regularization loss as Keras' `compute_loss` adds it to the total
    (`model._aggregate_additional_loss`: summed to a scalar in floatx)."""
    return model._aggregate_additional_loss(loss)


def runs_keras_train_step(model):
    """Whether `model`'s class keeps Keras' own torch `train_step`, `compute_loss` and
    `_compute_loss` (torch backend only: `keras.src.backend.torch.trainer.TorchTrainer`)."""
    from keras.src.backend.torch.trainer import TorchTrainer

    cls = type(model)
    return (cls.train_step is TorchTrainer.train_step
            and cls.compute_loss is keras.Model.compute_loss
            and cls._compute_loss is keras.Model._compute_loss)


def only_compiled_loss(compiled):
    """The one loss a built `CompileLoss` (`model._compile_loss`) applies, to a single
    output and without a loss weight (`compiled._flat_losses`), else None."""
    flat = getattr(compiled, "_flat_losses", None) if getattr(compiled, "built", False) else None
    if not flat or len(flat) != 1:
        return None
    path, loss, weight = tuple(flat[0])[:3]
    return loss if not path and weight is None else None


def loss_function_kwargs(loss):
    """The keyword arguments a Keras `LossFunctionWrapper` loss passes to its function
    (`loss._fn_kwargs`: `from_logits`, `axis`, ...); {} for another loss."""
    return dict(getattr(loss, "_fn_kwargs", {}) or {})
