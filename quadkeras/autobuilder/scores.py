"""Layer importance for the auto-builder: δA from masking probes, P_M, P_W and RI.

P_M = layer params / total params and P_W = layer MACs / total MACs, both over ALL layers
of the model (QuadraLib's auto-builder: "layer params / total params"): shares of the candidates therefore
sum to at most 1, and to exactly 1 over every layer with parameters / MACs. Params include
non-trainable ones (per-branch BN statistics of quadratic layers) so that the total is
`model.count_params()`; MACs are `quadkeras.summary.count_macs`.
δA = A₀ − A_masked, floored at `epsilon`; RI = P_M·P_W/δA (high = costly but unimportant).

Example:

>>> import numpy as np, keras
>>> inputs = keras.Input((4,))
>>> model = keras.Model(inputs, keras.layers.Dense(2, name="d")(keras.layers.Dense(3)(inputs)))
>>> sum(param_shares(model).values())
1.0
"""

import csv
from dataclasses import asdict, dataclass

import numpy as np

from quadkeras.autobuilder.masking import masked
from quadkeras.summary.macs import per_layer_macs
from quadkeras.utils.progress import track

CSV_FIELDS = ("rank", "name", "params", "macs", "p_m", "p_w", "accuracy", "delta_a", "ri")


@dataclass
class LayerScore:
    """Probe result for one candidate layer."""

    name: str
    params: int
    macs: int
    p_m: float
    p_w: float
    accuracy: float
    delta_a: float
    ri: float


def shares(counts):
    """{name: count / total} of {name: count} (all 0 when the total is 0)."""
    total = float(sum(counts.values()))
    return {name: (c / total if total else 0.0) for name, c in counts.items()}


def param_shares(model):
    """{layer name: params / total params} over every layer (sums to 1)."""
    return shares({layer.name: layer.count_params() for layer in model.layers})


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of `model` on NumPy arrays (inference mode).

    Examples whose logits are not all finite count as wrong (np.argmax would pick the
    first NaN, i.e. class 0).
    """
    logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    right = np.argmax(logits, axis=-1) == np.asarray(y).reshape(-1)
    return float(np.mean(right & np.isfinite(logits).all(axis=-1)))


def probe_layers(model, x, y, candidates, masking_ratio=0.5, seed=0, epsilon=1e-3,
                 batch_size=256, evaluate=None):
    """Mask each candidate in turn and score it.

    Args:
        model: a built Keras model (its weights are restored exactly after every probe).
        x, y: held-out NumPy inputs (preprocessed as the model expects) and int labels.
        candidates: layer names to probe.
        evaluate: optional `fn(model) -> accuracy`; defaults to top-1 on (x, y).

    Returns:
        (baseline accuracy, [LayerScore] sorted by RI, highest first).
    """
    if epsilon <= 0:
        raise ValueError(f"Invalid epsilon={epsilon!r}: expected a float > 0.")
    evaluate = evaluate or (lambda m: accuracy(m, x, y, batch_size))
    counts = {layer.name: layer.count_params() for layer in model.layers}
    macs = per_layer_macs(model)
    pm, pw = shares(counts), shares(macs)
    baseline = evaluate(model)
    scores = []
    for name in track(candidates, label=f"probing {len(candidates)} layers", unit_name="layer"):
        with masked(model.get_layer(name), masking_ratio, seed):
            acc = evaluate(model)
        delta = max(baseline - acc, epsilon)
        scores.append(LayerScore(name, int(counts[name]), int(macs[name]), pm[name], pw[name],
                                 acc, delta, pm[name] * pw[name] / delta))
    scores.sort(key=lambda s: s.ri, reverse=True)
    return baseline, scores


def format_scores(baseline, scores):
    """Ranked plain-text table of probe results."""
    head = f"{'rank':>4}  {'layer':<24} {'params':>10} {'MACs':>13} {'P_M':>7} {'P_W':>7} " \
           f"{'acc':>7} {'dA':>7} {'RI':>9}"
    lines = [f"baseline accuracy A0 = {baseline:.4f}", head, "-" * len(head)]
    for rank, s in enumerate(scores, start=1):
        lines.append(f"{rank:>4}  {s.name:<24} {s.params:>10,} {s.macs:>13,} {s.p_m:>7.4f} "
                     f"{s.p_w:>7.4f} {s.accuracy:>7.4f} {s.delta_a:>7.4f} {s.ri:>9.4f}")
    return "\n".join(lines)


def write_csv(scores, path):
    """Write the ranked scores (one row per layer, `CSV_FIELDS`) to `path`."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for rank, s in enumerate(scores, start=1):
            writer.writerow({"rank": rank, **asdict(s)})
