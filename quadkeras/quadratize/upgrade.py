"""Upgrade a trained first-order model to quadratic, computing the same function at the start.

`quadratize(model, layers=...)` takes a model built from a zoo name or a model config (it
carries its config: `model_config.config_of`) and returns a model whose chosen `Conv2D`
layers are `QuadConv2D` layers, built from a normal model config (the chosen layers as
`overrides: {name: {type: quad, neuron: ...}}`), so it trains, saves, resumes, quantizes
and exports like any zoo model. The new layers start from the old ones:

`neuron="ours"`, y = BN_a(W_a X) * BN_b(W_b X) + BN_c(W_c X) (the default):
  * W_c (and its bias) is the pretrained kernel: the linear branch is the old conv.
  * BN_c takes over the moving mean / variance of the BatchNorm that follows the layer
    (every convertible conv feeds one), and that BatchNorm's moving statistics become
    (0, 1 - eps): at inference BN_c(W_c X) followed by it is exactly the old conv -> BN. In
    training BN_c standardises W_c X with batch statistics, which the following BN (also
    in batch statistics) would have done anyway, so training sees the old function too, and
    the moving statistics start where training keeps them.
  * the product term is exactly zero: BN_a has gamma = beta = 0, so BN_a(.) = 0 whatever
    W_a X is, in training and at inference. W_a, W_b and BN_b are freshly initialised
    (the config's initialisers; BN_b gamma 1, beta 0). Gradients: dL/dgamma_a =
    sum(dy * BN_b * xhat_a) and dL/dbeta_a = sum(dy * BN_b) are non-zero from the first step
    (BN_b is a fresh non-zero feature), so the first SGD step moves gamma_a / beta_a; W_a
    and W_b get gradient through gamma_a / BN_a, i.e. from the second step on. (Zeroing a
    kernel instead would leave BN_b normalising a zero-variance input: gradients 1/sqrt(eps)
    = 316x too large.)

`neuron="t1"`, y = X^T A X + W_b X (+ bias), no BN: W_b and the bias are the pretrained ones,
A = 0 (product term exactly zero; dL/dA = sum(dy * X X^T) is non-zero at the first step).
`t1` has (kh * kw * C_in)^2 * C_out parameters: small layers only.

The other neurons (`t2`, `t3`, `t4`, `t2_4`) have no first-order term to carry the
pretrained kernel and are refused.

Which layers: `layers` (names), `layer_regex` (re.fullmatch), or `top_k` / `param_budget`
layers from the candidates ranked by `criterion` (`rank_layers`):
  * `gradient` (default, needs data): quadratize every candidate in a trial model, run ONE
    SGD step at learning rate 1 on a batch and score each layer by the squared norm of its
    product gate's gradient ||dL/d(gamma_a, beta_a)||^2 (for `t1` ||dL/dA||^2): the
    first-order decrease of the loss that layer's new term buys in one step.
  * `masking` (needs data): the auto-builder's probes (`autobuilder.scores.probe_layers`),
    lowest RI = P_M * P_W / dA first (layers that matter most for their cost).
  * `last`: the last layers first (last stage first), no data.
`param_budget` caps the ADDED parameters (a fraction of the original model's when <= 1,
else a count): layers are taken in rank order, skipping those that no longer fit.

Example:

>>> import numpy as np
>>> from quadkeras.models import build_model
>>> model = build_model("resnet20", input_shape=(8, 8, 3))
>>> quad = quadratize(model, layers=["stage3_block3_conv2"])
>>> type(quad.get_layer("stage3_block3_conv2")).__name__
'QuadConv2D'
>>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
>>> bool(np.allclose(model.predict(x, verbose=0), quad.predict(x, verbose=0), atol=1e-5))
True
>>> config_of(quad)["overrides"]
{'stage3_block3_conv2': {'type': 'quad', 'neuron': 'ours', 'use_bias': False}}
>>> added_params(model, "stage3_block3_conv2") == quad.count_params() - model.count_params()
True
"""

import numpy as np
import keras

from quadkeras.layers import QuadLayerBase
from quadkeras.models.quad_conversion import NEURONS, check_model, convert, quadratized_config  # noqa: F401
from quadkeras.quadratize.rank import CRITERIA, rank_layers  # noqa: F401 (re-exported)
from quadkeras.utils.attached_config import config_of  # noqa: F401 (the module example uses it)
from quadkeras.utils.layer_regex import filter_by_layer_regex
from quadkeras.utils.validation import check_choice


def convertible_layers(model):
    """Names of the layers `quadratize` can convert: first-order `Conv2D`s, in model order."""
    return [layer.name for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, QuadLayerBase)]


def _kind(layer):
    return "quadratic already" if isinstance(layer, QuadLayerBase) else type(layer).__name__


def select_layers(model, layers=None, layer_regex=None):
    """The candidate names `layers` / `layer_regex` pick among `convertible_layers(model)`
    (all of them when both are None); one-line ValueError naming the argument otherwise."""
    allowed = convertible_layers(model)
    present = {layer.name: layer for layer in model.layers}
    if layers:
        missing = [n for n in layers if n not in present]
        if missing:
            raise ValueError(f"Invalid layers={missing!r}: not in the model; expected names "
                             f"among {', '.join(allowed)}.")
        wrong = [n for n in layers if n not in allowed]
        if wrong:
            raise ValueError(f"Invalid layers={wrong!r}: {_kind(present[wrong[0]])} "
                             f"{wrong[0]!r} cannot be quadratized (only first-order Conv2D layers "
                             f"followed by a BatchNormalization); expected names among "
                             f"{', '.join(allowed)}.")
        chosen = list(dict.fromkeys(layers))
    else:
        chosen = allowed
    if layer_regex:
        chosen = filter_by_layer_regex(chosen, layer_regex, "convertible")
    if not chosen:
        raise ValueError("Invalid model: it has no first-order Conv2D layer to quadratize.")
    return chosen


def added_params(model, name, neuron="ours"):
    """Parameters (trainable or not) that quadratizing layer `name` of `model` adds.

    `ours`: two more branch kernels (+ biases) and 3 x 4 BN vectors; `t1`: the bilinear A.
    """
    layer = model.get_layer(name)
    kernel = int(np.prod(layer.kernel.shape))
    filters = int(layer.kernel.shape[-1])
    if check_choice("neuron", neuron, NEURONS) == "t1":
        patch = kernel // filters
        return patch * patch * filters
    return 2 * kernel + (2 * filters if layer.use_bias else 0) + 12 * filters


def quadratize(model, layers=None, layer_regex=None, top_k=None, param_budget=None,
               neuron="ours", criterion="gradient", x=None, y=None, batch_size=128, seed=0):
    """A copy of `model` with the chosen Conv2D layers quadratic, same function at the start.

    Args:
        model: a trained model built from a zoo name / model config (carries its config).
        layers, layer_regex: which layers (names; regex over the convertible ones); with
            `top_k` / `param_budget` they narrow the candidates that are ranked.
        top_k: quadratize the k best-ranked candidates (`criterion`).
        param_budget: quadratize best-ranked candidates while the ADDED parameters stay at
            most this (fraction of the model's parameters when <= 1, else a count).
        neuron: `ours` (default) or `t1` (see the module docstring).
        criterion: `gradient`, `masking` or `last` (`rank_layers`); `x`, `y` the data
            (preprocessed as the model expects, int labels) the first two need.

    Returns:
        the new model (its config attached: `model_config.config_of`).
    """
    config = check_model(model)
    neuron = check_choice("neuron", neuron, NEURONS)
    explicit = layers or layer_regex
    if not explicit and top_k is None and param_budget is None:
        raise ValueError("Invalid selection: expected one of layers, layer_regex, top_k, "
                         "param_budget.")
    names = select_layers(model, layers, layer_regex)
    if top_k is not None or param_budget is not None:
        ranked = rank_layers(model, names, criterion, x, y, neuron, batch_size, seed)
        names = pick(model, ranked, top_k, param_budget, neuron)
    return convert(model, names, neuron, config, seed)


def pick(model, ranked, top_k=None, param_budget=None, neuron="ours"):
    """The first `top_k` of `ranked` names, then those whose added parameters fit
    `param_budget` (in rank order, skipping layers that no longer fit); names in model order."""
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or \
                not 1 <= top_k <= len(ranked):
            raise ValueError(f"Invalid top_k={top_k!r}: expected an integer in [1, {len(ranked)}] "
                             f"(the number of candidate layers).")
        ranked = ranked[:top_k]
    if param_budget is not None:
        if not isinstance(param_budget, (int, float)) or isinstance(param_budget, bool) or \
                param_budget <= 0:
            raise ValueError(f"Invalid param_budget={param_budget!r}: expected a fraction in "
                             "(0, 1] of the model's parameters or a count > 1.")
        limit = param_budget * model.count_params() if param_budget <= 1 else param_budget
        chosen, used = [], 0
        for name in ranked:
            cost = added_params(model, name, neuron)
            if used + cost <= limit:
                chosen.append(name)
                used += cost
        if not chosen:
            cheapest = min(added_params(model, n, neuron) for n in ranked)
            raise ValueError(f"Invalid param_budget={param_budget!r}: no candidate fits (the "
                             f"cheapest adds {cheapest:,} parameters); expected at least that.")
        ranked = chosen
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    return sorted(ranked, key=order.get)


