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

import json
import zlib

import numpy as np
import keras

from quadkeras.backend import keras_private
from quadkeras.layers import QuadLayerBase
from quadkeras.models.builder import build_model
from quadkeras.utils.attached_config import config_of
from quadkeras.utils.layer_regex import filter_by_layer_regex
from quadkeras.utils.validation import check_choice

NEURONS = ("ours", "t1")  # a first-order term for the old kernel, a product term that can start at 0
CRITERIA = ("gradient", "masking", "last")


def _plain(config):
    return json.loads(json.dumps(config))


def convertible_layers(model):
    """Names of the layers `quadratize` can convert: first-order `Conv2D`s, in model order."""
    return [layer.name for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, QuadLayerBase)]


def _kind(layer):
    return "quadratic already" if isinstance(layer, QuadLayerBase) else type(layer).__name__


def _check_model(model):
    config = config_of(model)
    if config is None:
        raise ValueError("Invalid model: it carries no quadkeras model config; build it with "
                         "quadkeras.models.build_model or load it with model_config.load_model "
                         "(a zoo / config model, or a .keras file quadkeras wrote).")
    if config.get("quantize"):
        raise ValueError("Invalid model: a quantized model (config key 'quantize'); quadratize "
                         "the float model, then quantize it (quadkeras.quantize.quantize_model).")
    return _plain(config)


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


def _following_bn(model, name):
    """The BatchNormalization the layer `name` feeds (its only consumer), or None."""
    ops_ = keras_private.consumers(model.get_layer(name))
    if len(ops_) == 1 and isinstance(ops_[0], keras.layers.BatchNormalization):
        return ops_[0]
    return None


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


def quadratized_config(config, names, neuron="ours", biases=None):
    """`config` with the layers `names` made quadratic (`overrides`), name suffixed `_quad`.

    `biases`: {name: use_bias} of the old layers (default: the config's `use_bias`).
    """
    new = _plain(config)
    overrides = new.setdefault("overrides", {})
    for name in names:
        spec = {"type": "quad", "neuron": neuron}
        if biases is not None:
            spec["use_bias"] = bool(biases[name])
        if neuron == "t1":
            spec["t1_linear"] = True
        overrides[name] = {**overrides.get(name, {}), **spec}
    base = config.get("name", config["family"])
    new["name"] = base if base.endswith("_quad") else f"{base}_quad"
    return new


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
    config = _check_model(model)
    neuron = check_choice("neuron", neuron, NEURONS)
    explicit = layers or layer_regex
    if not explicit and top_k is None and param_budget is None:
        raise ValueError("Invalid selection: expected one of layers, layer_regex, top_k, "
                         "param_budget.")
    names = select_layers(model, layers, layer_regex)
    if top_k is not None or param_budget is not None:
        from quadkeras.models.quadratize_rank import rank_layers  # noqa: PLC0415 (imports this)

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


def convert(model, names, neuron="ours", config=None, seed=0):
    """Build the quadratized model of `names` and fill it from `model` (see the module).

    The fresh branches (W_a, W_b and their biases) are drawn by the config's initialisers
    seeded from (`seed`, layer name, branch): the same call gives the same model, and the
    `gradient` ranking scores exactly the start the chosen layers then get."""
    config = _check_model(model) if config is None else config
    biases = {n: model.get_layer(n).use_bias for n in names}
    follow = {n: _following_bn(model, n) for n in names}
    if neuron == "ours":
        lonely = [n for n, bn in follow.items() if bn is None]
        if lonely:
            raise ValueError(f"Invalid layers={lonely!r}: neuron='ours' needs a BatchNormalization "
                             "right after the layer (its linear branch has a batch-statistics BN); "
                             f"expected layers followed by one, or neuron='t1'.")
    new = build_model(quadratized_config(config, names, neuron, biases))
    old_layers = {layer.name: layer for layer in model.layers}
    bn_after = {follow[n].name: n for n in names if follow[n] is not None and neuron == "ours"}
    for layer in new.layers:
        old = old_layers.get(layer.name)
        if layer.name in names:
            _fill_quad(layer, old, follow[layer.name] if neuron == "ours" else None, seed)
        elif old is not None and old.weights:
            layer.set_weights(old.get_weights())
            if layer.name in bn_after:
                _hand_over_statistics(layer)
        elif old is None and layer.weights:
            raise ValueError(f"Invalid model: layer {layer.name!r} of the quadratized config has "
                             "no counterpart in the model (was it built from this config?).")
    return new


def _np(variable):
    return np.array(keras.ops.convert_to_numpy(variable))


def _seeded(initializer, seed, name, branch):
    """`initializer` with a seed from (seed, layer name, branch) (as is when it takes none)."""
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    mixed = (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 7 + branch) % (2 ** 31 - 1)
    return initializer.__class__.from_config({**config, "seed": mixed})


def _fill_quad(layer, old, bn, seed=0):
    """Set a fresh QuadLayer `layer` from the first-order `old` (and the BN `bn` it feeds)."""
    kernel = _np(old.kernel)
    bias = _np(old.bias) if old.use_bias else None
    if layer.neuron == "t1":
        layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
        layer.linear_kernel.assign(kernel)
        if bias is not None:
            layer.bias.assign(bias)
        return
    fused = _np(layer.kernel)
    ka, kb, kc = layer._kernel_branch_index  # channels of each branch (fused layout)
    fused[..., kc] = kernel
    for i, idx in enumerate((ka, kb)):
        fused[..., idx] = _np(_seeded(layer.kernel_initializer, seed, layer.name, i)(
            kernel.shape, dtype="float32"))
    layer.kernel.assign(fused)
    a, b, c = layer._branch_index
    if bias is not None:
        fused_bias = _np(layer.bias)
        fused_bias[c] = bias
        for i, idx in enumerate((a, b)):
            fused_bias[idx] = _np(_seeded(layer.bias_initializer, seed, layer.name, 10 + i)(
                bias.shape, dtype="float32"))
        layer.bias.assign(fused_bias)
    gamma, beta = _np(layer.branch_gamma), _np(layer.branch_beta)
    mean, var = _np(layer.branch_moving_mean), _np(layer.branch_moving_variance)
    gamma[a], beta[a] = 0.0, 0.0  # product term exactly 0
    gamma[c], beta[c] = 1.0, 0.0
    mean[c], var[c] = _np(bn.moving_mean), _np(bn.moving_variance)
    for variable, value in ((layer.branch_gamma, gamma), (layer.branch_beta, beta),
                            (layer.branch_moving_mean, mean), (layer.branch_moving_variance, var)):
        variable.assign(value)


def _hand_over_statistics(bn):
    """The BN after an `ours` layer: its input is now standardised (moving stats -> BN_c)."""
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, 1.0 - bn.epsilon, "float32"))

