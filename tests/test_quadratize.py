"""`quadkeras.quadratize`: a trained first-order model upgraded to quadratic computes the
same function at the start, its product terms learn from the first steps, and the result is a
normal config model (save / load, rebuild, quantize). Tiny models, random "trained" weights."""

import numpy as np
import pytest
import keras

from quadkeras.layers import QuadConv2D
from quadkeras.models import build_model
from quadkeras.quadratize import quadratize
from quadkeras.models.model_config import config_of, load_model, save_model
from quadkeras.quadratize.upgrade import added_params, convertible_layers, select_layers
from quadkeras.quadratize.rank import gradient_scores, rank_layers

RESNET = {"family": "resnet", "name": "tiny_resnet", "input_shape": [8, 8, 3], "num_classes": 3,
          "stem_filters": 4, "conv": {"type": "conv"}, "use_bias": False,
          "stages": [{"filters": 4, "blocks": 1, "stride": 1}, {"filters": 8, "blocks": 1, "stride": 2}]}
VGG = {"family": "vgg", "name": "tiny_vgg", "input_shape": [8, 8, 3], "num_classes": 3,
       "cfg": [4, "M", 6], "conv": {"type": "conv"}, "use_bias": True}


def trained(config, seed=0):
    """A model of `config` with random non-trivial weights and BN statistics (a stand-in for
    a trained one: the BN hand-over is only tested when the statistics are not 0 / 1)."""
    model = build_model(config)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            shape, name = tuple(w.shape), w.path.split("/")[-1]
            if name == "moving_variance":
                values.append(rng.uniform(0.5, 2.0, shape))
            elif name == "gamma":
                values.append(rng.uniform(0.5, 1.5, shape))
            else:
                values.append(rng.normal(0, 0.3, shape))
        if values:
            layer.set_weights([v.astype("float32") for v in values])
    return model


def images(n=8, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 3)).astype("float32")


def _np(v):
    return np.array(keras.ops.convert_to_numpy(v))


@pytest.mark.jax
@pytest.mark.parametrize("config,regex", [(RESNET, ".*"), (VGG, "conv2")])
def test_same_function_at_start(config, regex):
    model = trained(config)
    quad = quadratize(model, layer_regex=regex)
    chosen = [n for n in convertible_layers(model) if n in config_of(quad)["overrides"]]
    assert chosen and all(isinstance(quad.get_layer(n), QuadConv2D) for n in chosen)
    x = images()
    before = model.predict(x, verbose=0)
    np.testing.assert_allclose(quad.predict(x, verbose=0), before, atol=1e-5)
    # training mode: the linear branch's batch-statistics BN is undone by the BN after it
    train_out = keras.ops.convert_to_numpy(quad(x, training=True))
    np.testing.assert_allclose(train_out, keras.ops.convert_to_numpy(model(x, training=True)),
                               atol=2e-3)
    assert model.count_params() + sum(added_params(model, n) for n in chosen) == quad.count_params()


@pytest.mark.jax
def test_t1_neuron_same_function_and_param_count():
    model = trained(VGG)
    quad = quadratize(model, layers=["conv1"], neuron="t1")
    layer = quad.get_layer("conv1")
    assert layer.neuron == "t1" and not np.any(_np(layer.kernel))
    x = images()
    np.testing.assert_allclose(quad.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert quad.count_params() - model.count_params() == added_params(model, "conv1", "t1")


def _product_gate(layer):
    a, b, _ = layer._branch_index
    ka, kb, _ = layer._kernel_branch_index
    kernel = _np(layer.kernel)
    return {"gamma_a": _np(layer.branch_gamma)[a], "beta_a": _np(layer.branch_beta)[a],
            "kernel_a": kernel[..., ka], "kernel_b": kernel[..., kb]}


@pytest.mark.jax
def test_product_term_learns_from_the_first_steps():
    model = trained(RESNET)
    quad = quadratize(model, layers=["stage2_block1_conv1"])
    layer = quad.get_layer("stage2_block1_conv1")
    start = _product_gate(layer)
    assert not np.any(start["gamma_a"]) and not np.any(start["beta_a"])
    quad.compile(optimizer=keras.optimizers.SGD(0.1),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = images(16), np.arange(16) % 3
    quad.train_on_batch(x, y)
    one = _product_gate(layer)
    # step 1: the zeroed BN's gamma / beta get gradient (BN_b is a fresh non-zero feature) ...
    assert np.abs(one["gamma_a"]).max() > 1e-6 and np.abs(one["beta_a"]).max() > 1e-6
    # ... the branch kernels only through gamma_a, i.e. from step 2 on (see the module docstring)
    np.testing.assert_array_equal(one["kernel_a"], start["kernel_a"])
    quad.train_on_batch(x, y)
    two = _product_gate(layer)
    assert np.abs(two["kernel_a"] - start["kernel_a"]).max() > 1e-7
    assert np.abs(two["kernel_b"] - start["kernel_b"]).max() > 1e-7


def test_save_load_rebuild_and_quantize(tmp_path):
    model = trained(RESNET)
    quad = quadratize(model, layers=["stem_conv", "stage2_block1_shortcut"])
    path = save_model(quad, str(tmp_path / "q.keras"))
    loaded = load_model(path)
    x = images()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), quad.predict(x, verbose=0), atol=1e-6)
    config = config_of(loaded)
    assert config["overrides"]["stage2_block1_shortcut"] == {"type": "quad", "neuron": "ours",
                                                            "use_bias": False}
    rebuilt = build_model(config)  # the config alone rebuilds the same architecture
    assert [(layer.name, type(layer).__name__) for layer in rebuilt.layers] == \
        [(layer.name, type(layer).__name__) for layer in loaded.layers]
    assert rebuilt.count_params() == loaded.count_params()
    from quadkeras.quantize import quantize_model

    quantized = quantize_model(loaded, "int8_qat")
    assert quantized.predict(x, verbose=0).shape == (8, 3)


def test_selection_by_rank_and_budget():
    model = trained(RESNET)
    candidates = select_layers(model)
    assert rank_layers(model, candidates, "last")[0] == candidates[-1]
    x, y = images(16), np.arange(16) % 3
    scores = gradient_scores(model, candidates, x, y)
    assert set(scores) == set(candidates) and all(s > 0 for s in scores.values())
    ranked = rank_layers(model, candidates, "gradient", x, y)
    quad = quadratize(model, top_k=2, criterion="gradient", x=x, y=y)
    assert set(config_of(quad)["overrides"]) == set(ranked[:2])
    cheapest = min(added_params(model, n) for n in candidates)
    quad = quadratize(model, param_budget=cheapest, criterion="last")
    assert quad.count_params() - model.count_params() == cheapest


@pytest.mark.parametrize("kwargs,words", [
    ({"layers": ["nope"]}, ["layers=['nope']", "stem_conv"]),
    ({"layer_regex": "stage9.*"}, ["layer_regex='stage9.*'", "stem_conv"]),
    ({"layer_regex": "("}, ["layer_regex='('", "not a regular expression"]),
    ({"layers": ["logits"]}, ["layers=['logits']", "Dense", "cannot be quadratized"]),
    ({"top_k": 99, "criterion": "last"}, ["top_k=99", "[1, 6]"]),
    ({"top_k": 0, "criterion": "last"}, ["top_k=0", "[1, 6]"]),
    ({"param_budget": 3, "criterion": "last"}, ["param_budget=3", "cheapest adds"]),
    ({"layers": ["stem_conv"], "neuron": "t4"}, ["neuron", "'t4'", "ours", "t1"]),
    ({"top_k": 1, "criterion": "gradient"}, ["criterion='gradient'", "needs data"]),
    ({"top_k": 1, "criterion": "best"}, ["criterion", "gradient", "masking", "last"]),
    ({}, ["selection", "layers", "top_k", "param_budget"]),
])
def test_bad_input_is_one_line(kwargs, words):
    model = trained(RESNET)
    with pytest.raises(ValueError) as err:
        quadratize(model, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_refuses_models_without_config_and_already_quadratic_layers():
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="carries no quadkeras model config"):
        quadratize(plain, layers=["x"])
    quad = quadratize(trained(RESNET), layers=["stem_conv"])
    with pytest.raises(ValueError, match="quadratic already 'stem_conv' cannot be quadratized"):
        quadratize(quad, layers=["stem_conv"])
