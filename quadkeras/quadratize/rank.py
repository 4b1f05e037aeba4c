"""Which layers `quadratize` upgrades first: `rank_layers(model, candidates, criterion)`.

Criteria (see `quadkeras.quadratize.upgrade`):
  * `gradient`: one SGD step at learning rate 1 on a trial model with EVERY candidate
    quadratized (the product terms start at zero); a layer's score is the squared change of
    its product gate (`ours`: gamma_a and beta_a of the zeroed BN; `t1`: the bilinear A),
    i.e. ||dL/d gate||^2, the first-order loss decrease its new term buys in one step.
  * `masking`: the auto-builder's probes (`quadkeras.autobuilder.scores.probe_layers`), in
    reverse RI order: lowest RI = P_M * P_W / dA first (important for what they cost).
  * `last`: model order reversed (last stage first), no data.

Example:

>>> import numpy as np
>>> from quadkeras.models import build_model
>>> model = build_model("resnet20", input_shape=(8, 8, 3))
>>> rank_layers(model, ["stem_conv", "stage3_block3_conv2"], "last")
['stage3_block3_conv2', 'stem_conv']
>>> x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
>>> scores = gradient_scores(model, ["stem_conv", "stage3_block3_conv2"], x, np.arange(16) % 10)
>>> sorted(scores), all(s > 0 for s in scores.values())
(['stage3_block3_conv2', 'stem_conv'], True)
"""

import numpy as np
import keras

from quadkeras.autobuilder.scores import probe_layers
from quadkeras.models.quad_conversion import convert
from quadkeras.utils.validation import check_choice

CRITERIA = ("gradient", "masking", "last")


def rank_layers(model, candidates, criterion="gradient", x=None, y=None, neuron="ours",
                batch_size=128, seed=0):
    """`candidates` (layer names) best first by `criterion` (`gradient`, `masking`, `last`);
    `x`, `y`: data prepared for `model` and int labels (`gradient` / `masking` only)."""
    check_choice("criterion", criterion, CRITERIA)
    if criterion == "last":
        return list(reversed(candidates))
    if x is None or y is None or not len(x):
        raise ValueError(f"Invalid criterion={criterion!r}: it needs data (x, y); pass them, or "
                         "criterion='last'.")
    if criterion == "masking":
        _, scores = probe_layers(model, x, y, candidates, seed=seed, batch_size=batch_size)
        return [s.name for s in reversed(scores)]
    scores = gradient_scores(model, candidates, x, y, neuron, batch_size, seed)
    return sorted(candidates, key=lambda n: -scores[n])


def _gate(layer):
    """The product-gate values of a freshly quadratized layer (NumPy)."""
    if layer.neuron == "t1":
        return [np.array(keras.ops.convert_to_numpy(layer.kernel))]
    a = layer._branch_index[0]
    return [np.array(keras.ops.convert_to_numpy(v))[a] for v in (layer.branch_gamma, layer.branch_beta)]


def gradient_scores(model, candidates, x, y, neuron="ours", batch_size=128, seed=0):
    """{name: ||dL/d product gate||^2} from one SGD step (learning rate 1, no momentum) on the
    first `batch_size` examples, every candidate quadratized at once with the fresh branches
    `quadratize(..., seed=seed)` gives them (`model` is untouched)."""
    trial = convert(model, list(candidates), neuron, seed=seed)
    before = {n: _gate(trial.get_layer(n)) for n in candidates}
    head = getattr(model.layers[-1], "activation", None)
    from_logits = head is not keras.activations.softmax
    trial.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    trial.train_on_batch(np.asarray(x[:batch_size], "float32"),
                         np.asarray(y[:batch_size]).reshape(-1).astype("int32"))
    return {n: float(sum(np.sum((after - b) ** 2) for after, b in
                         zip(_gate(trial.get_layer(n)), before[n]))) for n in candidates}
