"""Layers that hold quantizers: one variable order, and loading files written before
quantizers owned their variables.

Up to quadkeras 0.x (commit 73cbeaf) a quantizer created its variables on the layer that
used it (`conv1/kernel_step`); now each quantizer is a sublayer that owns them
(`conv1/kernel/step`). Two things keep older checkpoints working:

- `quantizers_first(host, quantizers)` puts the quantizers before the other sublayers, in
  their build order, so `model.trainable_variables` keeps the old order (an optimizer's
  saved slots are matched to variables by position);
- `load_host_variables(host, store, quantizers)`, called from the host's
  `load_own_variables`, assigns variables that an older file lists under the host itself
  to the quantizers (the host's trainable ones first, then the others, each in creation
  order, as Keras wrote them) and tells the quantizers not to expect their own entries.

Example:

>>> import keras
>>> from quadkeras.quantize import QuantizeWrapper
>>> w = QuantizeWrapper(keras.layers.Dense(2), kernel_quantizer="lsq:4", input_quantizer="lsq:4")
>>> w.build((None, 3))
>>> [v.path for v in w.trainable_variables]
['dense/input/step', 'dense/kernel/step', 'dense/dense/kernel', 'dense/dense/bias']
"""


def quantizers_first(host, quantizers):
    """Order `host`'s tracked sublayers: `quantizers` (in the given order), then the rest."""
    rank = {id(q): i for i, q in enumerate(quantizers)}
    host._layers.sort(key=lambda layer: rank.get(id(layer), len(rank)))  # Keras' sublayer list


def load_host_variables(host, store, quantizers):
    """Load `host`'s own entries of a weights store: none in files written now; in older
    files, the variables of `quantizers` (given in the order the host built them)."""
    keys = len(store.keys())
    if not keys:
        return
    legacy = ([v for q in quantizers for v in q.trainable_weights]
              + [v for q in quantizers for v in q.non_trainable_weights])
    if keys != len(legacy):
        raise ValueError(f"Invalid weights file for layer '{host.name}': it lists {keys} variables "
                         f"on the layer itself, expected 0 or {len(legacy)} (its quantizers' "
                         "variables, as older versions saved them).")
    for i, var in enumerate(legacy):
        var.assign(store[f"{i}"])
    for q in quantizers:
        q._loaded_by_host = True
