"""Quantization-aware training: `QuantizeWrapper`, `quantize_model` and schemes.

Example:

>>> from quadkeras.models import build_model
>>> model = quantize_model(build_model("resnet20", num_classes=10), scheme_from_flags("lsq", 4, 4))
>>> model.get_layer("stage1_block1_conv1").quantization_bits()
{'weight': 4, 'activation': 4}
>>> type(model.get_layer("stem_conv")).__name__  # first layer stays float by default
'Conv2D'
"""

from quadkeras.quantize.model import initialize_quantizers, quantize_model, quantized_layers
from quadkeras.quantize.output import QuantizeOutput
from quadkeras.quantize.scheme import METHODS, PRESETS, resolve_scheme, scheme_from_flags
from quadkeras.quantize.wrapper import QuantizeWrapper, is_quantizable

__all__ = ["QuantizeOutput", "QuantizeWrapper", "initialize_quantizers", "quantize_model", "quantized_layers", "scheme_from_flags",
           "resolve_scheme", "is_quantizable", "METHODS", "PRESETS"]
