"""The eager torch train step without Keras' per-step walks over the layer tree (issue #26).

Keras' torch `train_step` walks the model's layer tree five times a step: torch's
`zero_grad()` (every parameter of every submodule), `trainable_weights` twice, `losses`
(each layer's `add_loss` losses and the trainable weights' regularizers) and, at the start of
the model's call, `_clear_losses` (recursive). On the zoo ResNet-20 (130 layers, 161
variables) that is ~0.45 ms of an 8-12 ms overhead-bound step (CPU, batch 2, 8x8 px).
`fast_torch_train_step(model)` gives the model a `train_step` that computes the same step
from lists made once -- the flattened layers, the weights, the torch parameters -- and made
again whenever a layer gains or loses a sublayer or a variable (each step compares the
lengths of those lists, ~20 us). Read afresh every step, as Keras does: each variable's
`trainable` flag (a layer frozen by a callback is frozen at once) and each trainable
variable's `regularizer`.

The step is Keras' (the same forward, loss, metrics, `optimizer.apply` and the order of the
trainable variables); what differs is only how the lists are found. It runs Keras' own step
where the lists would not be the ones Keras reads: inside a compiled step (dynamo traces
Keras' step once, so its walks cost nothing per step there), inside a `StatelessScope`, and
under a `keras.distribution`. It is not installed on a model whose class overrides
`train_step`, `compute_loss` or `_compute_loss`, nor over a `train_step` already set on the
instance (data-parallel training's: `quadkeras.training.ddp_step`, which runs `train_step`
below with its DDP forward). `fast_torch_forward(model)` turns it on with the fast forward;
`fast_torch_train_step(model, False)` turns it off. An attribute of the model object only:
`model.save` writes the same file.

Example:

>>> import keras, numpy as np
>>> from quadkeras.training.fast_step import fast_torch_train_step
>>> inputs = keras.Input((4,))
>>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
>>> model.compile(optimizer="sgd", loss="mse")
>>> fast_torch_train_step(model) == (keras.backend.backend() == "torch")
True
>>> history = model.fit(np.ones((8, 4)), np.zeros((8, 2)), batch_size=4, verbose=0)
>>> len(history.history["loss"])
1
"""

import types
import warnings

import keras

from quadkeras.backend import active as active_backend
from quadkeras.backend import keras_private


def fast_torch_train_step(model, enabled=True):
    """Turn the fast eager train step of `model` on (`enabled=True`) or off; True when on.

    On a backend other than torch, for a model whose class has its own `train_step` or loss,
    or over a `train_step` already set on the instance, nothing changes and False comes back.
    """
    own = getattr(model, "__dict__", {}).get("train_step")
    ours = is_fast_torch_train_step(model)
    if ours and not enabled:
        for name in ("train_step", "_clear_losses", _WALKS):
            model.__dict__.pop(name, None)
    if not enabled or not _eligible(model):
        return False
    if own is not None and not ours:
        return False  # e.g. data-parallel training's train_step
    # instance attributes (`object.__setattr__`: past Keras' and torch's attribute tracking)
    object.__setattr__(model, "train_step", types.MethodType(_fast_train_step, model))
    object.__setattr__(model, "_clear_losses", types.MethodType(_clear_losses, model))
    return True


def is_fast_torch_train_step(model):
    """True when `model` runs the fast eager train step."""
    step = getattr(model, "__dict__", {}).get("train_step")
    return getattr(step, "__func__", None) is _fast_train_step


def _eligible(model):
    return (isinstance(model, keras.Model) and active_backend().DIRECT_LAYER_CALL  # torch
            and keras_private.runs_keras_train_step(model))


class _Walks:
    """The layer tree's lists, made once; `current()` says whether they still hold."""

    def __init__(self, model):
        self.layers = keras_private.flat_layers(model)
        self.stamp = keras_private.tree_stamp(self.layers)
        self.weights = list(model.weights)
        self.parameters = list(model.parameters())
        self.active = False  # True inside one fast step, after `current()` said yes

    def current(self):
        return keras_private.tree_stamp(self.layers) == self.stamp


_WALKS = "_quadkeras_fast_step_walks"  # the instance attribute that holds a model's _Walks


def _walks(model):
    walks = model.__dict__.get(_WALKS)
    if walks is None or not walks.current():
        walks = _Walks(model)
        object.__setattr__(model, _WALKS, walks)
    return walks


def _clear_losses(self):
    """`Layer._clear_losses` for the model's call: flat over the known layers inside a fast
    step, Keras' recursive one otherwise."""
    walks = self.__dict__.get(_WALKS)
    if walks is not None and walks.active:
        keras_private.clear_own_losses(walks.layers)
    else:
        keras_private.keras_clear_losses(self)


def _fast_train_step(self, data):
    import torch

    if (torch.compiler.is_compiling() or keras_private.in_stateless_scope()
            or keras.distribution.distribution() is not None):
        return type(self).train_step(self, data)
    return train_step(self, data)


def train_step(model, data, forward=None):
    """Keras' torch train step of `model` on `data`, eagerly with the layer tree's lists made
    once (`_Walks`); traced (data-parallel training under `torch.compile`) with Keras' own
    lists, read once at trace time. `forward` (default: the model) computes the
    predictions, e.g. a DDP wrapper of the model."""
    import torch

    walks = None if torch.compiler.is_compiling() else _walks(model)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = _predict(model, model if forward is None else forward, x, walks)
    if walks is None:
        model.zero_grad()
        trainable = model.trainable_weights
        loss = keras_private.compute_loss(model, x, y, y_pred, sample_weight)
    else:
        for parameter in walks.parameters:  # torch's `zero_grad()` (set_to_none)
            parameter.grad = None
        trainable = [v for v in walks.weights if v.trainable] if model.trainable else []
        loss = _total_loss(model, walks, trainable, y, y_pred, sample_weight)
    keras_private.track_loss(model, loss, next(i for i in keras.tree.flatten(x)
                                               if i is not None).shape[0])
    if model.optimizer is not None:
        loss = model.optimizer.scale_loss(loss)
    if trainable:
        loss.backward()
        with torch.no_grad():
            # the variables' own tensors: `v.value` adds autocast checks, ~4 us a read
            model.optimizer.apply([keras_private.raw_value(v).grad for v in trainable], trainable)
    else:
        warnings.warn("The model does not have any trainable weights.")
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _predict(model, forward, x, walks):
    """`forward(x, training=True)` (as Keras' step calls the model), the model's call
    clearing its layers' losses from `walks`' flat list."""
    if walks is not None:
        walks.active = True
    try:
        return forward(x, training=True) if keras_private.call_takes_training(model) else forward(x)
    finally:
        if walks is not None:
            walks.active = False


def _total_loss(model, walks, trainable, y, y_pred, sample_weight):
    """Keras' `compute_loss`: the compiled loss plus `model.losses` (each layer's `add_loss`
    losses in `flat_layers` order, then the trainable weights' regularization losses)."""
    losses = []
    compiled = keras_private.compiled_loss(model)
    if compiled is not None:
        loss = None if sample_weight is not None else _cross_entropy(compiled, y, y_pred)
        if loss is None:
            loss = compiled(y, y_pred, sample_weight)
        if loss is not None:
            losses.append(loss)
    added = [loss for layer in walks.layers for loss in keras_private.own_losses(layer)]
    added += [v.regularizer(v) for v in trainable if v.regularizer is not None]
    losses += [keras_private.aggregate_added_loss(model, loss) for loss in added]
    if not losses:
        raise ValueError("No loss to compute. Provide a `loss` argument in `compile()`.")
    return losses[0] if len(losses) == 1 else keras.ops.sum(losses)


def _cross_entropy(compiled, y, y_pred):
    """Keras' (sparse) categorical cross-entropy from logits averaged over the batch (the
    loss `train()` compiles) in raw torch: the kernels Keras' torch ops run (`log_softmax`,
    product, sums; `cross_entropy` for class labels) without the ~15 Keras-dispatched ops,
    conversions and tree walks of `CompileLoss` and `Loss.__call__` (~0.3 ms a step). None
    (Keras computes it) for any other loss, reduction, dtype, shape, mask or ignored class."""
    import torch
    from torch.nn import functional

    loss = keras_private.only_compiled_loss(compiled)
    cls = type(loss)
    axis = keras_private.loss_function_kwargs(loss).get("axis", -1)
    if (axis not in (-1, 1) or cls not in (keras.losses.CategoricalCrossentropy,
                                           keras.losses.SparseCategoricalCrossentropy)
            or not loss.from_logits or loss.reduction != "sum_over_batch_size" or loss.dtype != "float32"
            or not isinstance(y, torch.Tensor) or not isinstance(y_pred, torch.Tensor)
            or y_pred.dtype != torch.float32 or y_pred.dim() != 2 or y.device != y_pred.device
            or keras_private.keras_mask(y_pred) is not None):
        return None
    if cls is keras.losses.SparseCategoricalCrossentropy:
        if loss.ignore_class is not None or y.is_floating_point():
            return None
        labels = y.reshape(-1) if y.dim() == 2 and y.shape[1] == 1 else y
        if labels.shape != y_pred.shape[:1]:
            return None
        per_sample = functional.cross_entropy(y_pred, labels.long(), reduction="none")
    else:
        if y.shape != y_pred.shape or y.dtype != torch.float32:
            return None
        target = y
        if loss.label_smoothing:  # as Keras: y * (1 - ls) + ls / num_classes, in float32
            classes = torch.tensor(y_pred.shape[-1], dtype=torch.float32, device=y.device)
            target = y * (1.0 - loss.label_smoothing) + loss.label_smoothing / classes
        per_sample = -torch.sum(target * functional.log_softmax(y_pred, dim=-1), dim=-1)
    return per_sample.sum() / per_sample.numel()  # reduction "sum_over_batch_size"
