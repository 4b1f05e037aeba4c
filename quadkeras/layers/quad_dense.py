"""`QuadDense`: a fully connected layer with quadratic neurons."""

import keras
from keras import ops

from quadkeras.layers.quad_base import QuadLayerBase
from quadkeras.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="quadkeras")
class QuadDense(QuadLayerBase):
    """Dense layer whose neurons are quadratic; one matmul with a fused kernel
    `(in_features, branches * units)` computes every branch.

    Example:

    >>> import numpy as np
    >>> tuple(QuadDense(4, neuron="t4")(np.ones((2, 3), "float32")).shape)
    (2, 4)
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)

    @property
    def units_per_branch(self):
        return self.units

    def _check_input_shape(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"Invalid input shape {tuple(input_shape)} for QuadDense '{self.name}': "
                "expected rank >= 2 with a known last axis."
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def _kernel_shape(self, input_shape, branches):
        return (input_shape[-1], branches * self.units)

    def _linear(self, x, kernel):
        return ops.matmul(x, kernel)

    def _patch_size(self, input_shape):
        return input_shape[-1]

    def _patches(self, x):
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config
