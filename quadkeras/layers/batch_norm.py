"""`BatchNormalization`: Keras' layer with a fused training kernel (torch / tensorflow).

A drop-in subclass of `keras.layers.BatchNormalization` (same weights, config, numerics and
moving-statistics update; biased batch variance) whose training step runs through
`quadkeras.layers.fused_ops.batch_norm_train`: one native BatchNorm kernel forward and one
backward on torch and tensorflow instead of Keras' chain of element-wise ops (on CPU the
chain costs more than the 3x3 convolution it follows); inference uses `batch_norm_infer`
(one kernel on torch, `ops.batch_normalization` as in Keras elsewhere). Masks, renorm,
`scale` / `center` off, or a channel axis other than the last fall back to Keras' own code. The zoo
models (`quadkeras.models`) use it for every BN.

Example:

>>> import numpy as np
>>> bn = BatchNormalization(momentum=0.9, epsilon=1e-5)
>>> x = np.random.default_rng(0).standard_normal((16, 4, 4, 3)).astype("float32")
>>> y = keras.ops.convert_to_numpy(bn(x, training=True))
>>> bool(np.allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5))
True
>>> bool(np.allclose(keras.ops.convert_to_numpy(bn.moving_mean), 0.1 * x.mean(axis=(0, 1, 2)), atol=1e-6))
True
"""

import keras
from keras import ops

from quadkeras.layers.fused_ops import batch_norm_infer, batch_norm_step, batch_norm_train, update_moving


@keras.saving.register_keras_serializable(package="quadkeras")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused training path (same arguments)."""

    def _fused_training(self, inputs, training, mask):
        return (training and self.trainable and mask is None and self.scale and self.center
                and not self.renorm and not self.synchronized
                and self.axis % len(inputs.shape) == len(inputs.shape) - 1)

    def _fused_inference(self, inputs, training, mask):
        return (not (training and self.trainable) and mask is None and self.scale and self.center
                and self.axis % len(inputs.shape) == len(inputs.shape) - 1)

    def call(self, inputs, training=None, mask=None):
        if not self._fused_training(inputs, training, mask):
            if self._fused_inference(inputs, training, mask):
                x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
                stats = (self.moving_mean, self.moving_variance, self.gamma, self.beta)
                y = batch_norm_infer(x, *(ops.cast(v, x.dtype) for v in stats), self.epsilon)
                return ops.cast(y, self.compute_dtype)
            return super().call(inputs, training=training, mask=mask)
        if self.compute_dtype == "float32":  # torch: the whole step on raw tensors
            y = batch_norm_step(inputs, self.gamma, self.beta, self.moving_mean,
                                self.moving_variance, self.momentum, self.epsilon)
            if y is not None:
                return y
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        y, mean, var = batch_norm_train(x, ops.cast(self.gamma, x.dtype), ops.cast(self.beta, x.dtype),
                                        self.epsilon)
        m = self.momentum
        mean = ops.stop_gradient(ops.cast(mean, self.moving_mean.dtype))
        var = ops.stop_gradient(ops.cast(var, self.moving_variance.dtype))
        update_moving(self.moving_mean, mean, m)
        update_moving(self.moving_variance, var, m)
        return ops.cast(y, self.compute_dtype)
