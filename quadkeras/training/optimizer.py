"""`CoupledDecaySGD`: Keras SGD with PyTorch-style (coupled) per-variable L2 decay.

PyTorch's `SGD(weight_decay=wd)` — the seed recipe — adds `wd * w` to the gradient before
momentum (coupled L2). Keras' `weight_decay` is decoupled (`w -= lr * wd * w` outside the
momentum), which changes the effective regularisation with momentum 0.9. To reproduce the
seeds we add `coef * w` to each (already clipped) gradient, exactly where `torch.optim.SGD`
does after `clip_grad_norm_`. Coefficients per variable come from `quadkeras.training.decay`.

Example:

>>> import keras, numpy as np
>>> opt = CoupledDecaySGD(learning_rate=0.1, l2=0.5)
>>> w = keras.Variable(np.ones(2, "float32"))
>>> opt.apply([keras.ops.zeros(2)], [w])
>>> np.asarray(w).tolist()  # w - lr * (0 + 0.5 * w)
[0.949999988079071, 0.949999988079071]
"""

import keras
from keras import ops

from quadkeras.training.decay import decay_coefficients


@keras.saving.register_keras_serializable(package="quadkeras")
class CoupledDecaySGD(keras.optimizers.SGD):
    """SGD (+momentum) whose gradients get `coef * variable` added after clipping."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2=0.0,
                 decay_small=False, custom_decay_list=None, custom_decay=None,
                 name="coupled_decay_sgd", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         name=name, **kwargs)
        self.l2 = float(l2)
        self.decay_small = bool(decay_small)
        self.custom_decay_list = custom_decay_list or None
        self.custom_decay = custom_decay
        decay_coefficients([], self.l2, self.decay_small, self.custom_decay_list, self.custom_decay)
        self._decay_coefs = []

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._decay_coefs = decay_coefficients(
            variables, self.l2, self.decay_small, self.custom_decay_list, self.custom_decay)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        decayed = []
        for grad, var in zip(grads, trainable_variables):
            coef = self._decay_coefs[self._get_variable_index(var)]
            decayed.append(grad if coef == 0.0 else grad + ops.cast(var, grad.dtype) * coef)
        super()._backend_update_step(decayed, trainable_variables, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update({"l2": self.l2, "decay_small": self.decay_small,
                       "custom_decay_list": self.custom_decay_list,
                       "custom_decay": self.custom_decay})
        return config
