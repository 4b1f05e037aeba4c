"""Find learnable quantizer parameters so training code can give them their own decay.

Variable names end in `_step` (LSQ), `_alpha` (PACT), `_basis` (LQ-Net), `_levels`
(non-uniform) or `_clip` (`lsq_mq`), e.g. `kernel_step`, `input_alpha`. The usual treatment (model-quantization's
`--decay_small` / `--custom_decay_list`): no weight decay on `step`/`basis`/`levels`, a
custom L2 decay on PACT's `alpha`.

Example:

>>> import numpy as np, keras
>>> from quadkeras.quantize import QuantizeWrapper
>>> w = QuantizeWrapper(keras.layers.Dense(2), "lsq:4", "pact:4")
>>> _ = w(np.ones((1, 3), "float32"))
>>> {k: [v.name for v in vs] for k, vs in quantizer_variables(w).items() if vs}
{'step': ['kernel_step'], 'alpha': ['input_alpha']}
"""

QUANTIZER_PARAM_KEYS = ("step", "alpha", "basis", "levels", "clip")


def quantizer_kind(variable):
    """'step' / 'alpha' / 'basis' / 'levels' / 'clip' for a quantizer variable, else None."""
    name = variable.name
    for key in QUANTIZER_PARAM_KEYS:
        if name.endswith("_" + key):
            return key
    return None


def quantizer_variables(model_or_layer):
    """{kind: [trainable variables]} of the learnable quantizer parameters."""
    groups = {key: [] for key in QUANTIZER_PARAM_KEYS}
    for var in model_or_layer.trainable_variables:
        kind = quantizer_kind(var)
        if kind is not None:
            groups[kind].append(var)
    return groups
