"""`BSQActivation`: the block activation of BSQ's ResNet-20 runs (Yang et al. 2021).

bits > 3: ReLU6, then the per-batch max-abs STE quantizer (`quantizers.MaxAbs`);
bits <= 3: PACT clipping min(relu(x), α) with a trained α (init 10, `quantizers.PACT.clip`),
then the same max-abs quantizer. (The reference's PACT only clips; the grid is always the
batch max-abs one.) `to_bsq(..., abits=k)` puts it in place of the block ReLUs.

The batch max-abs grid makes an image's output depend on the other images in its batch (the
reference's behaviour, kept for training and evaluation). `scale=S` fixes the grid instead;
`quadkeras.bsq.fix_activation_scales(model, images)` sets every layer's S from calibration
images, and export does so (docs/bsq.md, "Activation scale").

Example:

>>> import numpy as np, keras
>>> layer = BSQActivation(bits=2)  # PACT clip at alpha = 10, then grid 10 * k / 3
>>> [float(v) for v in keras.ops.convert_to_numpy(layer(np.array([[-1., 4., 12.]], "float32")))[0]]
[0.0, 3.3333332538604736, 10.0]
"""

import keras
from keras import ops

from quadkeras.quantizers import PACT, MaxAbs
from quadkeras.quantizers.hosting import load_host_variables
from quadkeras.utils.validation import check_int_range

PACT_MAX_BITS = 3  # the reference uses PACT instead of ReLU6 at act_bit <= 3


@keras.saving.register_keras_serializable(package="quadkeras")
class BSQActivation(keras.layers.Layer):
    """ReLU6 (or PACT clipping at <= 3 bits) + per-batch max-abs STE quantization to `bits`.

    Args:
        bits: activation bits, 1..8.
        alpha_init: initial PACT clipping level (used at bits <= 3), 10 as in the reference.
        scale: None (the reference: the grid's top is each batch's max) or a fixed top S
            (`fix_activation_scales`; what an exported model uses).
    """

    def __init__(self, bits=4, alpha_init=10.0, scale=None, **kwargs):
        super().__init__(**kwargs)
        self.bits = check_int_range("bits", int(bits), 1, 8)
        self.alpha_init = float(alpha_init)
        self.pact = PACT(bits=self.bits, alpha_init=alpha_init, role="activation", name="pact") \
            if self.bits <= PACT_MAX_BITS else None
        self.quantizer = MaxAbs(bits=self.bits, scale=scale, role="activation", name="quantizer")

    @property
    def scale(self):
        """The fixed grid top S, or None (per batch, as the reference)."""
        return self.quantizer.scale

    def build(self, input_shape):
        if self.pact is not None:
            self.pact.build(input_shape)
        self.quantizer.build(input_shape)
        self.built = True

    def load_own_variables(self, store):
        load_host_variables(self, store, [q for q in (self.pact, self.quantizer) if q is not None])

    def call(self, inputs, training=None):
        if self.pact is not None:
            clipped = self.pact.clip(inputs)[0]
        else:
            clipped = ops.relu6(inputs)
        return self.quantizer(clipped, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "alpha_init": self.alpha_init,
                "scale": self.scale}
