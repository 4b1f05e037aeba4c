"""`QuantizeOutput`: fake-quantize the output of any layer (e.g. the BatchNormalization after a conv).

Putting the fake-quant *after* the BatchNormalization that follows a conv/dense lets the
converter fold the (inference) BN into the int8 conv and use this range for its output, so no
float BN MUL/ADD is left between QUANTIZE/DEQUANTIZE pairs. With a symmetric per-channel
kernel quantizer the fold commutes with the kernel quantization. `quantize_model` inserts it
only for schemes with `"output_after_bn": True`: the opt-in preset `int8_qat_fold_bn`. The
default `int8_qat` preset and `--quant=fakequant` keep the output fake-quant on the conv/dense
itself, before the BN (the fold measured lower Keras-vs-LiteRT agreement, bench/results/2026-11-25.md).

Example:

>>> import numpy as np, keras
>>> bn = QuantizeOutput(keras.layers.BatchNormalization(), output_quantizer="fakequant:8")
>>> tuple(bn(np.ones((2, 4, 4, 3), "float32")).shape)
(2, 4, 4, 3)
>>> [(q.name, q.method) for q in bn.quantizers()]
[('output', 'fakequant')]
"""

import keras

from quadkeras.quantizers.hosting import QuantizerHost, Slot


@keras.saving.register_keras_serializable(package="quadkeras")
class QuantizeOutput(QuantizerHost):
    """Run `layer`, then `output_quantizer` on its output (training and inference).

    Args:
        layer: any single-output Keras layer.
        output_quantizer: anything `quadkeras.quantizers.get` accepts (required).
    """

    SLOTS = (Slot("output", "activation"),)

    def __init__(self, layer, *quantizers, **kwargs):
        kwargs.setdefault("name", getattr(layer, "name", None))
        super().__init__(layer, *quantizers, **kwargs)

    def check_slots(self, layer, given):
        if given["output"] is None:
            raise ValueError("Invalid output_quantizer=None for QuantizeOutput: expected a quantizer "
                             "spec such as 'fakequant:8'.")

    def call(self, inputs, training=None, mask=None):
        masks = mask if isinstance(mask, (list, tuple)) else [mask]
        kwargs = {"mask": mask} if any(m is not None for m in masks) else {}  # Add: [None, None]
        return self.output_quantizer(self.layer(inputs, training=training, **kwargs), training=training)
