"""`CoupledDecaySGD`: Keras SGD with PyTorch-style (coupled) per-variable L2 decay.

PyTorch's `SGD(weight_decay=wd)` — the seed recipe — adds `wd * w` to the gradient before
momentum (coupled L2). Keras' `weight_decay` is decoupled (`w -= lr * wd * w` outside the
momentum), which changes the effective regularisation with momentum 0.9. To reproduce the
seeds we add `coef * w` to each (already clipped) gradient, exactly where `torch.optim.SGD`
does after `clip_grad_norm_`. Coefficients per variable come from `quadkeras.training.decay`.

`momentum_form` picks where the learning rate enters the momentum buffer:
- `"keras"` (Keras' SGD): `v = m * v - lr * g; w += v` — the buffer holds past steps, each
  scaled by the LR of its own step;
- `"torch"` (`torch.optim.SGD`): `b = m * b + g; w -= lr * b` — the buffer holds gradients and
  today's LR scales all of them, so an LR drop takes effect at once.
The two are the same update while the LR is constant and differ after every LR change (the
seed recipe's cosine schedule changes it every epoch). Nesterov follows the same two forms
(`torch`: `w -= lr * (g + m * b)`).

Example:

>>> import keras, numpy as np
>>> opt = CoupledDecaySGD(learning_rate=0.1, l2=0.5)
>>> w = keras.Variable(np.ones(2, "float32"))
>>> opt.apply([keras.ops.zeros(2)], [w])
>>> np.asarray(w).tolist()  # w - lr * (0 + 0.5 * w)
[0.949999988079071, 0.949999988079071]
"""

MOMENTUM_FORMS = ("keras", "torch")

import keras
from keras import ops

from quadkeras.training.decay import decay_coefficients
from quadkeras.utils.validation import check_choice


@keras.saving.register_keras_serializable(package="quadkeras")
class CoupledDecaySGD(keras.optimizers.SGD):
    """SGD (+momentum) whose gradients get `coef * variable` added after clipping.

    `momentum_form="torch"` applies the momentum as `torch.optim.SGD` does (see the module
    docstring); the default `"keras"` keeps Keras' form (and loads older saved optimizers).
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2=0.0,
                 decay_small=False, custom_decay_list=None, custom_decay=None,
                 momentum_form="keras", name="coupled_decay_sgd", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         name=name, **kwargs)
        self.l2 = float(l2)
        self.decay_small = bool(decay_small)
        self.custom_decay_list = custom_decay_list or None
        self.custom_decay = custom_decay
        decay_coefficients([], self.l2, self.decay_small, self.custom_decay_list, self.custom_decay)
        self._decay_coefs = []
        self.momentum_form = check_choice("momentum_form", momentum_form, MOMENTUM_FORMS)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._decay_coefs = decay_coefficients(
            variables, self.l2, self.decay_small, self.custom_decay_list, self.custom_decay)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if keras.backend.backend() == "torch" and _same_dtypes(grads, trainable_variables):
            grads = _torch_decay_foreach(self, grads, trainable_variables)
            step = _torch_form_foreach if self._torch_form() else _keras_form_foreach
            step(self, grads, trainable_variables, learning_rate)
            return
        decayed = []
        for grad, var in zip(grads, trainable_variables):
            coef = self._decay_coefs[self._get_variable_index(var)]
            decayed.append(grad if coef == 0.0 else grad + ops.cast(var, grad.dtype) * coef)
        if self._torch_form() and keras.backend.backend() == "torch":
            # mixed dtypes on torch: Keras' per-variable loop would use the keras form
            _torch_form_foreach(self, decayed, trainable_variables, learning_rate)
            return
        super()._backend_update_step(decayed, trainable_variables, learning_rate)

    def _clip_gradients(self, grads):
        # Under tf.distribute each replica holds its share of the gradient: sum them first
        # (the all-reduce Keras' TF optimizer would do after clipping), so the global-norm clip
        # and the coupled decay see the global gradient, as on one device.
        if (keras.backend.backend() == "torch" and self.global_clipnorm and not self.clipnorm
                and not self.clipvalue and all(g is not None for g in grads)):
            return _torch_clip_by_global_norm(grads, self.global_clipnorm)
        return super()._clip_gradients(tf_replica_sum(grads))

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return grads_and_vars  # TensorFlow only: already summed in `_clip_gradients`

    def _torch_form(self):
        return self.momentum_form == "torch" and self.momentum != 0

    def update_step(self, gradient, variable, learning_rate):
        if not self._torch_form():
            return super().update_step(gradient, variable, learning_rate)
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        momentum = ops.cast(self.momentum, variable.dtype)
        buf = self.momentums[self._get_variable_index(variable)]
        self.assign(buf, buf * momentum + gradient)
        step = gradient + buf * momentum if self.nesterov else buf
        self.assign_sub(variable, step * lr)

    def get_config(self):
        config = super().get_config()
        config.update({"l2": self.l2, "decay_small": self.decay_small,
                       "custom_decay_list": self.custom_decay_list,
                       "custom_decay": self.custom_decay, "momentum_form": self.momentum_form})
        return config


def tf_replica_sum(grads):
    """Gradients summed over the `tf.distribute` replicas (unchanged outside a multi-replica
    replica context and on the other backends)."""
    if keras.backend.backend() != "tensorflow":
        return grads
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return grads
    context = tf.distribute.get_replica_context()
    present = [g for g in grads if g is not None]
    if context.num_replicas_in_sync == 1 or not present:
        return grads
    summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(summed) for g in grads]


def _same_dtypes(grads, variables):
    return all(g is not None and g.dtype == v.value.dtype for g, v in zip(grads, variables))


def _torch_decay_foreach(optimizer, grads, variables):
    """`grad + coef * variable` for every variable, one `torch._foreach_add` per coefficient
    (PyTorch's SGD does the same) instead of three small ops per variable."""
    import torch

    coefs = [optimizer._decay_coefs[optimizer._get_variable_index(v)] for v in variables]
    out = list(grads)
    with torch.no_grad():
        for coef in set(coefs) - {0.0}:
            idx = [i for i, c in enumerate(coefs) if c == coef]
            summed = torch._foreach_add([grads[i] for i in idx], [variables[i].value for i in idx], alpha=coef)
            for i, g in zip(idx, summed):
                out[i] = g
    return out


def _torch_clip_by_global_norm(grads, clip_norm):
    """Keras' `clip_by_global_norm` (scale = clip * min(1/norm, 1/clip); NaN when the norm is
    not finite) with one `torch._foreach_norm` instead of a norm per gradient."""
    import torch

    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        scale = clip_norm * torch.minimum(1.0 / norm, torch.tensor(1.0 / clip_norm, device=norm.device))
        scale = torch.where(torch.isfinite(norm), scale, torch.tensor(float("nan"), device=norm.device))
        return torch._foreach_mul(grads, scale.to(grads[0].dtype))


def _torch_form_foreach(optimizer, grads, variables, learning_rate):
    """The torch-form step with `torch._foreach` kernels (what `torch.optim.SGD` runs)."""
    import torch

    params = [v.value for v in variables]
    bufs = [optimizer.momentums[optimizer._get_variable_index(v)].value for v in variables]
    with torch.no_grad():
        torch._foreach_mul_(bufs, optimizer.momentum)
        torch._foreach_add_(bufs, grads)
        if optimizer.nesterov:
            torch._foreach_add_(params, grads, alpha=-learning_rate)
            torch._foreach_add_(params, bufs, alpha=-learning_rate * optimizer.momentum)
        else:
            torch._foreach_add_(params, bufs, alpha=-learning_rate)


def _keras_form_foreach(optimizer, grads, variables, learning_rate):
    """The keras-form step with `torch._foreach` kernels: the update Keras' own torch SGD
    runs (a subclass of `keras.optimizers.SGD` is not swapped for it and would otherwise
    update each variable with five small ops: 16 of 61 ms in a profiled QResNet14 step at
    batch 2)."""
    import torch

    params = [v.value for v in variables]
    with torch.no_grad():
        if optimizer.momentum == 0:
            torch._foreach_add_(params, grads, alpha=-learning_rate)
            return
        bufs = [optimizer.momentums[optimizer._get_variable_index(v)].value for v in variables]
        torch._foreach_mul_(bufs, optimizer.momentum)
        torch._foreach_add_(bufs, grads, alpha=-learning_rate)
        if optimizer.nesterov:  # w += m * v - lr * g
            torch._foreach_add_(params, grads, alpha=-learning_rate)
            torch._foreach_add_(params, bufs, alpha=optimizer.momentum)
        else:
            torch._foreach_add_(params, bufs)
