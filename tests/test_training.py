"""quadkeras.training: schedules, decay rules, coupled SGD, atomic checkpoints, exact resume."""

import json
import math
import os

import keras
import numpy as np
import pytest

from quadkeras.training import CoupledDecaySGD, decay_coefficients, make_schedule, train
from quadkeras.training.checkpoint import check_resumable, save_best_if_better, write_json

TINY = {"name": "tiny", "family": "resnet", "input_shape": [16, 16, 1], "num_classes": 10,
        "stem_filters": 4, "stages": [{"filters": 4, "blocks": 1, "stride": 1}],
        "conv": {"type": "quad", "neuron": "ours", "use_bias": False}, "use_bias": False}

# the fewest layers for a quadratic net with BatchNormalization (QuadConv2D, BN, ReLU, Dense)
TINY_VGG = {"name": "tiny_vgg", "family": "vgg", "input_shape": [16, 16, 1], "num_classes": 10,
            "cfg": [4], "conv": {"type": "quad", "neuron": "ours"}}


def tiny_config(work_dir, **kw):
    cfg = {"dataset": "digits", "model": TINY, "epochs": 4, "batch_size": 32, "max_train": 256,
           "max_test": 64, "augment": "crop", "lr": 0.05, "work_dir": str(work_dir), "verbose": 0,
           "tensorboard": False, "deterministic": True}
    cfg.update(kw)
    return cfg


@pytest.mark.jax
def test_schedule_values():
    spe = 5
    cos = make_schedule("cosine", 0.1, spe, epochs=4, final_lr=1e-3)
    for step in (0, 4, 5, 12, 19, 25):
        e = min(step // spe, 4)
        want = 1e-3 + (0.1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * e / 4))
        assert float(cos(step)) == pytest.approx(want, rel=1e-5)
    multi = make_schedule("multistep", 0.1, spe, 10, milestones=[2, 3], gamma=0.5)
    assert [round(float(multi(s)), 6) for s in (9, 10, 14, 15)] == [0.1, 0.05, 0.05, 0.025]
    warm = make_schedule("cosine", 0.1, spe, 4, final_lr=0.0, warmup_epochs=2)
    assert [round(float(warm(s)), 6) for s in (0, 4, 9)] == [0.01, 0.05, 0.1]
    assert float(warm(10)) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 2 / 4)), rel=1e-5)
    assert float(make_schedule("constant", 0.3, spe, 4)(17)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="Invalid schedule='step'"):
        make_schedule("step", 0.1, spe, 4)


def test_decay_rules_pick_variables():
    from quadkeras.quantize import QuantizeWrapper

    inputs = keras.Input((4, 4, 2))
    x = QuantizeWrapper(keras.layers.Conv2D(3, 3, name="conv"), "lsq:4", "pact:4")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(x)))
    names = [v.path for v in model.trainable_variables]
    plain = dict(zip(names, decay_coefficients(model.trainable_variables, 5e-4)))
    assert set(plain.values()) == {5e-4}
    small = dict(zip(names, decay_coefficients(model.trainable_variables, 5e-4, decay_small=True)))
    decayed = {n for n, c in small.items() if c > 0}
    assert decayed == {n for n in names if n.endswith("/kernel")}, small
    assert any(n.endswith("/step") for n in names) and any(n.endswith("/alpha") for n in names)
    custom = dict(zip(names, decay_coefficients(model.trainable_variables, 5e-4, True, "alpha$", 0.01)))
    assert {n for n, c in custom.items() if c == 0.01} == {n for n in names if n.endswith("/alpha")}
    # a pattern written for the older names (`conv/input_alpha`) still finds the same variables
    legacy = dict(zip(names, decay_coefficients(model.trainable_variables, 5e-4, True, "_alpha", 0.01)))
    assert legacy == custom
    with pytest.raises(ValueError, match="custom_decay_list entry"):
        decay_coefficients(model.trainable_variables, 5e-4, custom_decay_list="(", custom_decay=0.1)


@pytest.mark.jax
@pytest.mark.parametrize("form", ["keras", "torch"])  # torch backend: the foreach kernels
def test_coupled_decay_matches_torch_style_reference(form):
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=2).astype("float32")
    w, b = keras.Variable(w0, name="kernel"), keras.Variable(b0, name="bias")
    opt = CoupledDecaySGD(learning_rate=0.1, momentum=0.9, l2=0.05, decay_small=True,
                          global_clipnorm=1.0, momentum_form=form)
    ref_w, buf = w0.astype("float64"), np.zeros((3, 2))
    for _ in range(3):
        gw, gb = rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=2).astype("float32")
        opt.apply([keras.ops.convert_to_tensor(gw), keras.ops.convert_to_tensor(gb)], [w, b])
        scale = min(1.0, 1.0 / np.sqrt((gw.astype("float64") ** 2).sum() + (gb.astype("float64") ** 2).sum()))
        buf = 0.9 * buf + (gw * scale + 0.05 * ref_w)  # clip, then coupled L2, then momentum
        ref_w = ref_w - 0.1 * buf
    np.testing.assert_allclose(np.asarray(w), ref_w, rtol=1e-5, atol=1e-6)
    restored = CoupledDecaySGD.from_config(opt.get_config())
    assert restored.l2 == 0.05 and restored.decay_small


@pytest.mark.jax
def test_coupled_decay_without_momentum():
    """momentum=0 (torch backend: one foreach kernel): w -= lr * (clipped g + l2 * w)."""
    w0 = np.array([1.0, -2.0, 0.5], "float32")
    w = keras.Variable(w0, name="kernel")
    opt = CoupledDecaySGD(learning_rate=0.1, l2=0.05, global_clipnorm=1.0)
    g = np.array([3.0, 0.0, -4.0], "float32")  # norm 5: clipped to 1
    opt.apply([keras.ops.convert_to_tensor(g)], [w])
    np.testing.assert_allclose(np.asarray(w), w0 - 0.1 * (g / 5 + 0.05 * w0), rtol=1e-6)


class _StepLR(keras.optimizers.schedules.LearningRateSchedule):
    """0.1 for two steps, then 0.01: an LR drop, where the momentum forms part."""

    def __call__(self, step):
        return keras.ops.where(step < 2, 0.1, 0.01)


@pytest.mark.jax
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_forms_match_their_references_across_an_lr_drop(nesterov):
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(4,)).astype("float32")
    grads = rng.normal(size=(5, 4)).astype("float32")
    finals = {}
    for form in ("torch", "keras"):
        w = keras.Variable(w0)
        opt = CoupledDecaySGD(_StepLR(), momentum=0.9, nesterov=nesterov, momentum_form=form)
        ref, buf = w0.astype("float64"), np.zeros(4)
        for step, g in enumerate(grads):
            opt.apply([keras.ops.convert_to_tensor(g)], [w])
            lr = 0.1 if step < 2 else 0.01
            if form == "torch":  # torch.optim.SGD
                buf = 0.9 * buf + g
                ref = ref - lr * (g + 0.9 * buf if nesterov else buf)
            else:  # keras.optimizers.SGD
                buf = 0.9 * buf - lr * g
                ref = ref + (0.9 * buf - lr * g if nesterov else buf)
        np.testing.assert_allclose(np.asarray(w), ref, rtol=1e-5, atol=1e-6)
        finals[form] = np.asarray(w)
        config = CoupledDecaySGD(0.1, momentum=0.9, momentum_form=form).get_config()
        assert CoupledDecaySGD.from_config(config).momentum_form == form
    assert np.abs(finals["torch"] - finals["keras"]).max() > 1e-3  # the forms really differ
    with pytest.raises(ValueError, match="momentum_form='adam'.*'keras', 'torch'"):
        CoupledDecaySGD(0.1, momentum=0.9, momentum_form="adam")


def test_best_checkpoint_only_replaced_by_better(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert save_best_if_better(model, str(tmp_path), 0.5, 1)
    before = (tmp_path / "best.keras").read_bytes()
    model.layers[0].kernel.assign(np.full((2, 1), 7.0, "float32"))
    assert not save_best_if_better(model, str(tmp_path), 0.4, 2)
    assert not save_best_if_better(model, str(tmp_path), 0.5, 3)  # equal is not better
    assert (tmp_path / "best.keras").read_bytes() == before
    assert json.loads((tmp_path / "best.json").read_text())["metric"] == 0.5
    assert save_best_if_better(model, str(tmp_path), 0.6, 4)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_mismatched_config_error(tmp_path):
    write_json(str(tmp_path / "state.json"), {"config": {"lr": 0.1, "wd": 5e-4}})
    with pytest.raises(ValueError, match=r"differs in keys \['lr'\].*nothing was overwritten"):
        check_resumable(str(tmp_path), {"lr": 0.2, "wd": 5e-4})


class _Crash(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            raise KeyboardInterrupt("simulated kill after checkpoint")


def _weights(path):
    return [np.asarray(w) for w in keras.models.load_model(path).weights]


@pytest.mark.jax
def test_resume_is_exact_and_mismatch_overwrites_nothing(tmp_path):
    straight = train(tiny_config(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "b"), callbacks=[_Crash(2)])
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["epoch"] == 2 and not (tmp_path / "b" / "summary.json").exists()
    snapshot = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"differs in keys \['lr'\]"):
        train(tiny_config(tmp_path / "b", lr=0.07, resume=True))
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir() if p.is_file()} == snapshot
    with pytest.raises(ValueError, match="pass --resume"):
        train(tiny_config(tmp_path / "b"))
    resumed = train(tiny_config(tmp_path / "b", resume=True))
    assert resumed["epochs_run"] == 2
    for wa, wb in zip(_weights(tmp_path / "a" / "last.keras"), _weights(tmp_path / "b" / "last.keras")):
        np.testing.assert_allclose(wa, wb, atol=1e-5)
    assert resumed["test_acc"] == pytest.approx(straight["test_acc"], abs=1e-6)
    rows_a = (tmp_path / "a" / "history.csv").read_text().splitlines()
    rows_b = (tmp_path / "b" / "history.csv").read_text().splitlines()
    assert len(rows_b) == 5 and rows_a[0] == rows_b[0]
    loss_col = rows_a[0].split(",").index("loss")
    for ra, rb in zip(rows_a[1:], rows_b[1:]):
        assert float(ra.split(",")[loss_col]) == pytest.approx(float(rb.split(",")[loss_col]), abs=1e-5)
    assert os.path.exists(tmp_path / "b" / "best.keras")
    evaluated = train(tiny_config(tmp_path / "b", evaluate_only=True))  # best.keras, no training
    assert evaluated["backend"] == keras.backend.backend()
    assert evaluated["checkpoint"].endswith("best.keras") and (tmp_path / "b" / "eval.json").exists()
    assert evaluated["test_acc"] == pytest.approx(resumed["best_acc"], abs=1e-6)


def test_init_from_fine_tunes_a_saved_model_quantized(tmp_path):
    from quadkeras.data import load_data
    from quadkeras.quantize import QuantizeWrapper
    from quadkeras.training.config import resolve_config
    from quadkeras.training.trainer import initial_model

    train(tiny_config(tmp_path / "float", epochs=1))
    saved = tmp_path / "float" / "best.keras"
    config = resolve_config(tiny_config(tmp_path / "qat", init_from=str(saved), quant="lsq",
                                        wbits=8, abits=8, epochs=1))
    data = load_data("digits")
    model = initial_model(config, data)
    float_model = keras.models.load_model(saved)
    wrapped = [layer for layer in model.layers if isinstance(layer, QuantizeWrapper)]
    assert wrapped, "quant='lsq' must wrap the block convs"
    for layer in wrapped:  # the wrapped layers start from the saved float weights
        np.testing.assert_array_equal(np.asarray(layer.layer.kernel),
                                      np.asarray(float_model.get_layer(layer.name).kernel))
    summary = train(config)
    assert summary["epochs_run"] == 1 and summary["quant"] == "lsq"
    assert summary["model"] == f"init_from={saved}"  # not the unused default zoo name
    with pytest.raises(ValueError, match="Invalid init_from=.*no such .keras file"):
        train(tiny_config(tmp_path / "x", init_from=str(tmp_path / "missing.keras")))
    other = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    other.save(tmp_path / "other.keras")
    with pytest.raises(ValueError, match=r"model takes \(8, 8, 1\).*needs \(16, 16, 1\)"):
        train(tiny_config(tmp_path / "y", init_from=str(tmp_path / "other.keras")))


@pytest.mark.jax
@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.1"])
def test_bad_val_fraction_is_a_one_line_error(bad):
    from quadkeras.training.config import resolve_config, resume_view

    with pytest.raises(ValueError, match=r"^Invalid val_fraction=.*expected a number in \[0, 1\)") as err:
        resolve_config({"val_fraction": bad})
    assert "\n" not in str(err.value)
    # runs saved before val_fraction existed still resume: the default stays out of the view
    assert "val_fraction" not in resume_view(resolve_config({}))
    assert resume_view(resolve_config({"val_fraction": 0.1}))["val_fraction"] == 0.1


def test_val_fraction_holds_out_a_seeded_split_for_validation(tmp_path):
    from quadkeras.data import load_data, make_dataset, training_split
    from quadkeras.training.config import resolve_config
    from quadkeras.training.trainer import _load

    cfg = tiny_config(tmp_path / "v", epochs=2, val_fraction=0.25, seed=3)
    data = _load(resolve_config(cfg))
    full = load_data("digits")
    index = np.arange(len(full.x_train))
    fit_idx, _, val_idx, _ = training_split(index, index, 256, 0.25, 3)
    assert len(fit_idx) == 192 and len(val_idx) == 64 and not set(fit_idx) & set(val_idx)
    np.testing.assert_array_equal(data.x_train, full.x_train[fit_idx])  # what fit() trains on
    np.testing.assert_array_equal(data.x_val, full.x_train[val_idx])
    np.testing.assert_array_equal(_load(resolve_config(cfg)).x_val, data.x_val)  # deterministic
    assert not np.array_equal(_load(resolve_config(cfg, seed=4)).y_val, data.y_val)
    assert _load(resolve_config(tiny_config(tmp_path / "n"))).x_val is None

    summary = train(cfg)
    model = keras.models.load_model(tmp_path / "v" / "last.keras")

    def acc(x, y):
        logits = model.predict(make_dataset(x, y, 64, False, data.mean, data.std), verbose=0)
        return float((logits.argmax(-1) == y).mean())

    assert summary["val_acc"] == pytest.approx(acc(data.x_val, data.y_val), abs=1e-6)
    assert summary["test_acc"] == pytest.approx(acc(data.x_test, data.y_test), abs=1e-6)
    rows = (tmp_path / "v" / "history.csv").read_text().splitlines()
    col = rows[0].split(",").index("val_acc")
    val_accs = [float(r.split(",")[col]) for r in rows[1:]]
    assert summary["val_acc"] == pytest.approx(val_accs[-1], abs=1e-6)
    assert summary["best_acc"] == pytest.approx(max(val_accs), abs=1e-6)  # best.keras on val
    state = json.loads((tmp_path / "v" / "state.json").read_text())
    assert state["config"]["val_fraction"] == 0.25
    with pytest.raises(ValueError, match=r"differs in keys \['val_fraction'\]"):
        train(tiny_config(tmp_path / "v", epochs=2, val_fraction=0.2, seed=3, resume=True))


def test_import_quadkeras_is_enough_to_load_a_run_checkpoint(tmp_path):
    """last.keras holds the CoupledDecaySGD + LR schedule: `import quadkeras` registers them."""
    from tests.backend_utils import run_backend

    train(tiny_config(tmp_path / "run", epochs=1))
    code = ("import keras, quadkeras; m = keras.models.load_model(%r); "
            "print(type(m.optimizer).__name__, int(m.optimizer.iterations))" % str(tmp_path / "run" / "last.keras"))
    assert "CoupledDecaySGD 8" in run_backend(keras.backend.backend(), code)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.compile: the torch backend's jit")
def test_jit_compile_trains_the_same_model(tmp_path):
    """A compiled run (torch.compile) trains the quadratic net like the eager step (BN
    statistics move); invalid values are refused in one line. The compiled run is
    `reduce_overhead`, `true` plus the mode 'reduce-overhead' (CUDA graphs): the mode reaches
    inductor, which on a CPU skips the CUDA graphs (counted) and compiles what `true` does, so
    one compile covers both (the mode wiring: tests/test_jit_setting.py; quantized models
    compiled: tests/test_torch_compile.py). One epoch of 2 steps each, on a one-conv quadratic
    VGG: Keras breaks the dynamo graph at every layer, so each layer is an inductor compile."""
    import torch
    from torch._dynamo.utils import counters

    skips = counters["inductor"]["cudagraph_skips"]
    runs = {jit: train(tiny_config(tmp_path / jit, model=TINY_VGG, epochs=1, max_train=64,
                                   max_test=32, jit_compile=jit))
            for jit in ("false", "reduce_overhead")}
    assert runs["reduce_overhead"]["test_acc"] == pytest.approx(runs["false"]["test_acc"], abs=0.1)
    if not torch.cuda.is_available():  # CUDA graphs asked for, skipped on the CPU device
        assert counters["inductor"]["cudagraph_skips"] > skips
    model = keras.models.load_model(str(tmp_path / "reduce_overhead" / "last.keras"))
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and np.abs(keras.ops.convert_to_numpy(bn[0].moving_mean)).max() > 1e-4
    with pytest.raises(ValueError, match="jit_compile='yes'.*'auto', 'true', 'false'"):
        train(tiny_config(tmp_path / "bad", jit_compile="yes"))
