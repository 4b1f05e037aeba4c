"""BSQ: bit-level sparsity mixed-precision quantization (Yang et al., ICLR 2021) for Keras 3.

Example:

>>> import keras
>>> from quadkeras.bsq import to_bsq, scheme_of
>>> model = to_bsq(keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, name="fc")]), bits=8)
>>> scheme_of(model)
{'fc': 8}
"""

from quadkeras.utils.lazy_names import lazy_names

# public name -> the module that defines it; each loads on first access (PEP 562), so
# `import quadkeras` (which registers the BSQ layers) loads no conversion / callback code.
_SOURCES = {
    "BSQActivation": "activation", "BSQCallback": "callback", "reset_optimizer_slots": "callback",
    **dict.fromkeys(("activation_scales", "batch_scaled_activations", "block_activations", "bsq_layer",
                     "bsq_layers", "bsq_quantizers", "fix_activation_scales", "is_bsq_layer", "part_key",
                     "precisions", "requantize_model", "scheme_of", "set_bsq_decay", "shortcut_convs",
                     "split_key", "sync_inner_weights", "to_bsq", "to_float", "to_representation"), "convert"),
    "bsq_report": "report", "format_report": "report", "save_report": "report",
    "BitPlanes": "quantizer", "ClipConstraint": "quantizer", "BitQuantWrapper": "legacy",
    "BSQ_STAGE": "stage", "BSQStage": "stage", "train_bsq": "stage",
}
__all__ = sorted(_SOURCES)

__getattr__, __dir__ = lazy_names(__name__, _SOURCES)
