"""Auto-builder: shares, exact masking/restore, RI ordering, emitted configs, training
work_dirs (config + held-out split from state.json), app."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import keras
from keras import ops

from quadkeras.autobuilder import (auto_build, emit_config, heldout, heldout_options,
                                   load_model_and_config, model_cost, probe_layers,
                                   select_candidates, training_config, write_config, write_csv)
from quadkeras.autobuilder.data import load_arrays
from quadkeras.data import split_validation
from quadkeras.autobuilder.masking import mask_for, masked
from quadkeras.autobuilder.scores import accuracy, param_shares, shares
from quadkeras.models import build_model, load_config
from quadkeras.summary import count_macs
from quadkeras.summary.macs import per_layer_macs
from tests.backend_utils import assert_png
from tests.test_autobuilder_fixtures import RESNET_TINY, VGG_TINY, train_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# apps/auto_build.py runs as a subprocess once, in the tensorflow process: the app's code is
# backend-independent; the library it calls is tested in process on every backend here.
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="app subprocesses run once, under tensorflow")


def _images(n=24, shape=(8, 8, 1), seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def _weights(model):
    return [ops.convert_to_numpy(v).copy() for v in model.weights]


@pytest.mark.jax
@pytest.mark.parametrize("config", [RESNET_TINY, VGG_TINY], ids=["resnet", "vgg"])
def test_param_and_mac_shares_sum_to_one(config):
    model = build_model(config)
    pm, pw = param_shares(model), shares(per_layer_macs(model))
    assert sum(pm.values()) == pytest.approx(1.0, abs=1e-12)
    assert sum(pw.values()) == pytest.approx(1.0, abs=1e-12)
    name = select_candidates(model)[0]
    layer = model.get_layer(name)
    assert pm[name] == pytest.approx(layer.count_params() / model.count_params())
    assert pw[name] > 0 and pw["stem_conv" if "stem_conv" in pw else name] > 0
    assert pm.get("flatten", pm.get("avg_pool")) == 0.0


@pytest.mark.jax
def test_mask_is_deterministic_and_exact_fraction():
    a = mask_for((3, 3, 4, 10), 0.3, seed=5, name="conv1/0")
    assert a.sum() == round(0.3 * a.size)
    assert np.array_equal(a, mask_for((3, 3, 4, 10), 0.3, seed=5, name="conv1/0"))
    assert not np.array_equal(a, mask_for((3, 3, 4, 10), 0.3, seed=6, name="conv1/0"))
    assert not np.array_equal(a, mask_for((3, 3, 4, 10), 0.3, seed=5, name="conv2/0"))
    with pytest.raises(ValueError, match="masking_ratio"):
        mask_for((2, 2), 1.5, 0, "x")


@pytest.mark.jax
def test_masking_zeroes_fused_kernel_and_restores_bitwise():
    model = build_model(VGG_TINY)
    layer = model.get_layer("conv2")
    before_all = _weights(model)
    kernel0 = ops.convert_to_numpy(layer.kernel).copy()
    x = _images()
    out0 = ops.convert_to_numpy(model(x, training=False))
    with masked(layer, ratio=0.5, seed=3):
        inside = ops.convert_to_numpy(layer.kernel)
        zeroed = (inside == 0) & (kernel0 != 0)
        assert zeroed.sum() == round(0.5 * kernel0.size)
        kept = inside != 0
        assert np.array_equal(inside[kept], kernel0[kept])  # no rescale
        assert not np.allclose(ops.convert_to_numpy(model(x, training=False)), out0)
    after = _weights(model)
    for b, a in zip(before_all, after):
        assert a.tobytes() == b.tobytes()


@pytest.mark.jax
def test_probe_restores_every_weight_even_on_error():
    model = build_model(RESNET_TINY)
    before = _weights(model)
    x, y = _images(), np.zeros(24, "int32")
    probe_layers(model, x, y, select_candidates(model), masking_ratio=0.7, seed=1)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, _weights(model)))

    def failing(m):
        if (ops.convert_to_numpy(m.get_layer("stage1_block1_conv1").kernel) == 0).any():
            raise RuntimeError("boom")
        return 1.0

    with pytest.raises(RuntimeError):
        probe_layers(model, x, y, ["stage1_block1_conv1"], evaluate=failing)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, _weights(model)))


def _synthetic_model():
    """x -> [important(x) + minor(x)] -> head; `minor` is scaled down 1e-4: masking it is harmless."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((6,))
    important = keras.layers.Dense(6, use_bias=False, name="important")
    minor = keras.layers.Dense(6, use_bias=False, name="minor")
    head = keras.layers.Dense(4, use_bias=False, name="head")
    outputs = head(keras.layers.Add()([important(inputs), minor(inputs)]))
    model = keras.Model(inputs, outputs)
    important.kernel.assign(rng.normal(size=(6, 6)).astype("float32"))
    minor.kernel.assign(1e-4 * rng.normal(size=(6, 6)).astype("float32"))
    head.kernel.assign(rng.normal(size=(6, 4)).astype("float32"))
    return model


@pytest.mark.jax
def test_ri_ordering_on_synthetic_model_with_known_answer():
    model = _synthetic_model()
    x = np.random.default_rng(1).normal(size=(400, 6)).astype("float32")
    y = np.argmax(ops.convert_to_numpy(model(x)), axis=-1)  # baseline accuracy is exactly 1
    assert select_candidates(model) == ["important", "minor"]  # the classifier is excluded
    baseline, scores = probe_layers(model, x, y, ["important", "minor"], masking_ratio=0.5,
                                    epsilon=1e-3)
    assert baseline == 1.0
    by_name = {s.name: s for s in scores}
    assert [s.name for s in scores] == ["minor", "important"]
    assert by_name["minor"].delta_a == 1e-3  # floored: masking it changes nothing
    assert by_name["important"].delta_a > 0.1
    for s in scores:
        assert s.ri == pytest.approx(s.p_m * s.p_w / s.delta_a)
        assert s.p_m == pytest.approx(36 / 96) and s.p_w == pytest.approx(36 / 96)


@pytest.mark.parametrize("action", ["first_order", "remove"])
def test_emitted_resnet_config_builds_smaller(action, tmp_path):
    model = build_model(RESNET_TINY)
    x, y = _images(), np.zeros(24, "int32")
    result = auto_build(model, x, y, top_k=2, action=action)
    assert len(result.chosen) == 2
    path = str(tmp_path / "auto.yaml")
    write_config(result.config, path, ["header comment"])
    new = build_model(load_config(path))
    assert new.count_params() < model.count_params()
    assert count_macs(new) < count_macs(model)
    names = {layer.name for layer in new.layers}
    for chosen in result.chosen:
        if action == "first_order":
            assert isinstance(new.get_layer(chosen), keras.layers.Conv2D)  # first-order (quadkeras subclass)
        else:
            assert chosen not in names
    if action == "remove":  # stage2_block1 changes the shape: never removed
        assert "stage2_block1_conv1" in names and "stage2_block1_conv2" in names


def test_emit_vgg_remove_and_budgets():
    params0, macs0 = model_cost(VGG_TINY)
    config, chosen = emit_config(VGG_TINY, ["conv2", "conv1", "conv3"], top_k=1, action="remove")
    assert chosen == ["conv2"] and config["overrides"] == {"conv2": {"type": "remove"}}
    assert model_cost(config)[0] < params0
    config, chosen = emit_config(VGG_TINY, ["conv3", "conv2", "conv1"], param_budget=0.9)
    params, _ = model_cost(config)
    assert params <= 0.9 * params0 and chosen[0] == "conv3"
    # stops as soon as the budget is met: one layer fewer would not meet it
    fewer = (model_cost(emit_config(VGG_TINY, chosen[:-1], top_k=len(chosen) - 1)[0])[0]
             if len(chosen) > 1 else params0)
    assert fewer > 0.9 * params0
    config, chosen = emit_config(VGG_TINY, ["conv1", "conv2", "conv3"], mac_budget=macs0 - 1)
    assert chosen == ["conv1"] and model_cost(config)[1] <= macs0 - 1
    assert VGG_TINY.get("overrides") is None  # input config untouched


@pytest.mark.jax
def test_candidate_selection_and_errors():
    model = build_model(RESNET_TINY)
    base = select_candidates(model)
    assert len(base) == 8 and base[0] == "stage1_block1_conv1"
    assert select_candidates(model, regex=r"stage2_.*conv1") == ["stage2_block1_conv1",
                                                                  "stage2_block2_conv1"]
    assert select_candidates(model, layer_index=[1, 7]) == [base[1], base[7]]
    assert select_candidates(model, layer_index=[0, 1, 2], regex=r".*conv2") == [base[1]]
    assert select_candidates(model, names=["stem_conv"]) == ["stem_conv"]
    with pytest.raises(ValueError, match="layer_index"):
        select_candidates(model, layer_index=[8])
    with pytest.raises(ValueError, match="layer_regex"):
        select_candidates(model, regex="nothing")
    with pytest.raises(ValueError, match="layers"):
        select_candidates(model, names=["nope"])
    with pytest.raises(ValueError, match="action"):
        emit_config(RESNET_TINY, base, top_k=1, action="prune")
    with pytest.raises(ValueError, match="top_k"):
        emit_config(RESNET_TINY, base)
    with pytest.raises(ValueError, match="no kernel"):
        with masked(model.get_layer("stem_conv_bn")):
            pass


@pytest.mark.jax
@pytest.mark.parametrize("regex", ["(", "stage[1", "*conv"])
def test_malformed_layer_regex_is_one_line_naming_it(regex):
    """A regex that does not compile (re.error, not a ValueError) used to end in a traceback."""
    model = build_model(VGG_TINY)
    with pytest.raises(ValueError, match=r"Invalid layer_regex=.*not a regular expression") as err:
        select_candidates(model, regex=regex)
    assert repr(regex) in str(err.value) and "\n" not in str(err.value)

@pytest.mark.jax
def test_accuracy_counts_non_finite_logits_as_wrong():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t)(inputs))
    x = np.array([[np.nan, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, np.inf]], "float32")
    assert accuracy(model, x, np.array([0, 0, 1, 0])) == 0.5


def test_csv_and_data_helpers(tmp_path):
    model = build_model(VGG_TINY)
    _, scores = probe_layers(model, _images(), np.zeros(24, "int32"), ["conv1", "conv3"])
    path = str(tmp_path / "ri.csv")
    write_csv(scores, path)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [s.name for s in scores]
    assert float(rows[0]["ri"]) == pytest.approx(scores[0].ri)
    arrays = load_arrays("digits", (32, 32, 3))
    assert arrays["x_train"].shape[1:] == (32, 32, 3) and arrays["x_train"].dtype == np.float32
    assert abs(float(arrays["x_train"].mean())) < 0.1
    x, y, xv, yv = split_validation(arrays["x_train"], arrays["y_train"], 0.1, seed=0)
    assert len(xv) == round(0.1 * len(arrays["x_train"])) and len(x) + len(xv) == len(arrays["x_train"])


@TF_ONLY
def test_auto_build_app_writes_csv_and_trainable_config(tmp_path):
    config_path = str(tmp_path / "tiny.yaml")
    write_config({**VGG_TINY, "input_shape": [16, 16, 1], "num_classes": 10}, config_path)
    out_csv, out_yaml = str(tmp_path / "ri.csv"), str(tmp_path / "auto.yaml")
    cmd = [sys.executable, os.path.join(REPO, "apps", "auto_build.py"), f"--model={config_path}",
           "--dataset=digits", "--max_examples=64", "--layer_index=0,2", "--top_k=1",
           "--action=remove", f"--csv={out_csv}", f"--output_config={out_yaml}",
           f"--plot={tmp_path / 'ri.png'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "baseline accuracy A0" in proc.stdout
    emitted = load_config(out_yaml)
    assert list(emitted["overrides"].values()) == [{"type": "remove"}]
    assert set(emitted["overrides"]) <= {"conv1", "conv3"}
    assert build_model(emitted).count_params() < build_model(config_path).count_params()
    with open(out_csv) as f:
        assert len(list(csv.DictReader(f))) == 2
    assert_png(tmp_path / "ri.png")


def _app(*args):
    cmd = [sys.executable, os.path.join(REPO, "apps", "auto_build.py"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_runs(tmp_path_factory.mktemp("runs"))


def test_work_dir_gives_model_config_and_the_runs_heldout_images(runs):
    from quadkeras.training.config import resolve_config
    from quadkeras.training.trainer import _load

    run = training_config(str(runs["val"]))
    assert (run["dataset"], run["val_fraction"], run["seed"], run["max_train"]) == ("digits", 0.25, 3, 256)
    assert training_config(str(runs["val"] / "best.keras")) == run
    model, config = load_model_and_config(str(runs["val"]))
    assert config["family"] == "resnet" and config["input_shape"] == [16, 16, 1]
    assert config["num_classes"] == 10 and config["stages"] == run["model"]["stages"]
    options = heldout_options(run)
    assert options == {"dataset": "digits", "val_fraction": 0.25, "seed": 3, "max_train": 256,
                       "split": "val"}
    x, y = heldout(**options, input_shape=model.input_shape[1:], normalize=False)
    held_out = _load(resolve_config(run))  # what train() used as validation data
    np.testing.assert_array_equal(y, held_out.y_val)
    np.testing.assert_array_equal(np.round(x * 255).astype("uint8"), held_out.x_val)
    x, y = heldout(**options, input_shape=model.input_shape[1:])
    result = auto_build(model, x, y, config, top_k=1)
    assert len(result.chosen) == 1 and build_model(result.config).count_params() < model.count_params()
    # explicit values win; another dataset drops the run's split
    assert heldout_options(run, seed=5)["seed"] == 5
    assert heldout_options(run, split="test")["split"] == "test"
    assert heldout_options(run, dataset="cifar10")["max_train"] == 0


def test_val_split_refused_for_a_run_without_val_fraction(runs):
    summary = json.loads((runs["noval"] / "summary.json").read_text())
    assert summary["val_acc"] is None and summary["test_acc"] == summary["best_acc"]
    run = training_config(str(runs["noval"] / "last.keras"))
    with pytest.raises(ValueError, match=r"^Invalid split='val': the run in .* trained on the whole "
                       r"training split .*--split=test or retrain with --val_fraction") as err:
        heldout_options(run)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="whole training split"):
        heldout_options(run, val_fraction=0.1)  # every training image was fitted on
    assert heldout_options(run, split="test")["split"] == "test"


def test_best_json_next_to_best_keras_is_not_a_model_config(runs, tmp_path):
    for name in ("best.keras", "best.json"):  # a copy without state.json
        shutil.copy(runs["val"] / name, tmp_path / name)
    model, config = load_model_and_config(str(tmp_path / "best.keras"))
    assert config == training_config(str(runs["val"]))["model"]  # stored inside the .keras
    assert training_config(str(tmp_path / "best.keras")) is None
    model.save(tmp_path / "best.keras")  # plain Keras: no stored model config
    model, config = load_model_and_config(str(tmp_path / "best.keras"))
    assert config is None and model.count_params() > 0  # ranking only, no KeyError: 'family'
    write_config({**training_config(str(runs["val"]))["model"]}, str(tmp_path / "best.yaml"))
    _, config = load_model_and_config(str(tmp_path / "best.keras"))
    assert config["family"] == "resnet"


@TF_ONLY
def test_auto_build_app_on_a_training_work_dir(runs, tmp_path):
    """The app on a run's work_dir: its held-out split; on a run without one, the one-line
    refusal of test_val_split_refused_for_a_run_without_val_fraction."""
    proc = _app(f"--model={runs['noval']}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Invalid split='val': the run in")
    out_yaml = str(tmp_path / "auto.yaml")
    proc = _app(f"--model={runs['val']}", "--top_k=1", f"--output_config={out_yaml}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "val_fraction=0.25 seed=3 max_train=256" in proc.stdout
    assert "held-out: digits val (64 examples)" in proc.stdout
    assert len(load_config(out_yaml)["overrides"]) == 1
