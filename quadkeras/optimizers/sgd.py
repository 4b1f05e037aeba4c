"""`CoupledDecaySGD`: Keras SGD with PyTorch-style (coupled) per-variable L2 decay.

PyTorch's `SGD(weight_decay=wd)` — the seed recipe — adds `wd * w` to the gradient before
momentum (coupled L2). Keras' `weight_decay` is decoupled (`w -= lr * wd * w` outside the
momentum), which changes the effective regularisation with momentum 0.9. To reproduce the
seeds we add `coef * w` to each (already clipped) gradient, exactly where `torch.optim.SGD`
does after `clip_grad_norm_`. Coefficients per variable come from `quadkeras.optimizers.decay`.

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

from quadkeras import backend
from quadkeras.backend import keras_private
from quadkeras.optimizers.decay import decay_coefficients
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

    # `_backend_update_step`, `_clip_gradients`, `_all_reduce_sum_gradients`: private Keras
    # hooks (keras_private.OPTIMIZER_HOOKS, checked by tests/test_backend_package.py).
    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        coefs = [self._decay_coefs[keras_private.variable_index(self, v)] for v in trainable_variables]
        if backend.active().sgd_update(self, grads, trainable_variables, learning_rate, coefs):
            return  # torch: fused multi-tensor kernels
        decayed = [grad if coef == 0.0 else grad + ops.cast(var, grad.dtype) * coef
                   for grad, var, coef in zip(grads, trainable_variables, coefs)]
        keras_private.optimizer_update_step(keras.optimizers.SGD, self, decayed, trainable_variables,
                                            learning_rate)

    def _clip_gradients(self, grads):
        # Under tf.distribute each replica holds its share of the gradient: sum them first
        # (the all-reduce Keras' TF optimizer would do after clipping), so the global-norm clip
        # and the coupled decay see the global gradient, as on one device.
        clipped = backend.active().clip_by_global_norm(self, grads)  # torch: fused kernels
        if clipped is not None:
            return clipped
        return keras_private.optimizer_clip_gradients(keras.optimizers.SGD, self, tf_replica_sum(grads))

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
        buf = self.momentums[keras_private.variable_index(self, variable)]
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
    return backend.active().replica_sum(grads)
