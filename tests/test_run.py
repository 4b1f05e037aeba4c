"""One owner per run: `training.work_dir.Run`, the model config inside every `.keras`, and
one input-normalisation decision for training, evaluation and export."""

import os

import keras
import numpy as np
import pytest

from quadkeras.models import build_model
from quadkeras.models.model_config import config_of, load_model, normalizes_input, save_model
from quadkeras.training.work_dir import Run, find_model_file
from tests.test_training import TINY, tiny_config

NORMALIZE = {"mean": [0.3], "std": [0.2]}


@pytest.mark.jax
def test_model_config_is_saved_inside_the_keras_file_and_carried_by_quantize(tmp_path):
    from quadkeras.bsq import to_bsq
    from quadkeras.quantize import quantize_model

    model = build_model(TINY)
    path = save_model(quantize_model(model, "int8_qat"), str(tmp_path / "q.keras"))
    loaded = load_model(path)
    assert config_of(loaded) == {**TINY, "quantize": "int8_qat"}
    assert config_of(to_bsq(model, bits=4)) == TINY
    assert build_model(config_of(loaded)).count_params() == loaded.count_params()
    assert len(keras.models.load_model(path).layers) == len(loaded.layers)  # Keras ignores it


@pytest.mark.jax
def test_quant_takes_a_preset_or_a_method():
    from quadkeras.training.config import resolve_config
    from quadkeras.training.config import model_config

    preset = model_config(resolve_config(quant="int8_qat"), (16, 16, 1), 10)["quantize"]
    method = model_config(resolve_config(quant="lsq", wbits=2), (16, 16, 1), 10)["quantize"]
    assert preset == "int8_qat" and method["kernel"] == "lsq:2" and method["input"] == "lsq:4"
    with pytest.raises(ValueError, match="Invalid quant method='int9'"):
        model_config(resolve_config(quant="int9"), (16, 16, 1), 10)


@pytest.mark.jax
def test_find_model_file_prefers_best_then_last(tmp_path):
    with pytest.raises(ValueError, match=r"Invalid model=.*work_dir has none of best.keras"):
        find_model_file(str(tmp_path))
    for name in ("last.keras", "best.keras"):
        (tmp_path / name).write_bytes(b"")
        assert find_model_file(str(tmp_path)) == str(tmp_path / name)
    assert Run.of(str(tmp_path)) is None and Run.of("qresnet14") is None  # no state.json


def test_self_normalising_model_is_not_normalised_twice(tmp_path):
    """A model config with `normalize:` standardises its own input: training, evaluation and
    export must feed it pixels scaled to [0, 1] only."""
    from quadkeras.data import dataset_arrays
    from quadkeras.training import evaluate, train

    config = dict(TINY, normalize=NORMALIZE)
    assert normalizes_input(build_model(config)) and not normalizes_input(build_model(TINY))
    summary = train(tiny_config(tmp_path / "run", model=config, epochs=1, augment="none"))
    run = Run.of(str(tmp_path / "run" / "last.keras"))
    assert run.dataset == "digits" and run.model_file() == str(tmp_path / "run" / "best.keras")
    last = load_model(run.path("last.keras"))
    assert config_of(last) == run.model_config((16, 16, 1), 10)
    assert config_of(last)["normalize"] == NORMALIZE
    x, y = dataset_arrays("digits", limit=64, normalize=False)
    assert 0.0 <= x.min() and x.max() <= 1.0
    # Training's own test accuracy is the saved model's accuracy on [0, 1] pixels.
    from quadkeras.data import load_data, seeded_subset

    d = load_data("digits")
    x_test, y_test = seeded_subset(d.x_test, d.y_test, 64)
    logits = last.predict(x_test.astype("float32") / 255.0, verbose=0)
    assert summary["test_acc"] == pytest.approx(float((logits.argmax(-1) == y_test).mean()))
    os.remove(run.path("best.keras"))
    result = evaluate(tiny_config(tmp_path / "run"))
    assert result["checkpoint"] == run.path("last.keras")
    assert result["test_acc"] == pytest.approx(summary["test_acc"])
    np.testing.assert_array_equal(y, dataset_arrays("digits", limit=64)[1])


@pytest.mark.jax
def test_model_identity_is_recorded_and_a_foreign_model_is_refused(tmp_path):
    """Every `.keras` quadkeras writes records its identity (config hash + layer signature);
    `check_model_identity` refuses another model in one line naming the file and the
    difference, and still accepts files written before identities existed."""
    from quadkeras.models.model_config import check_model_identity, identity, saved_identity

    model = build_model(TINY)
    path = save_model(model, str(tmp_path / "m.keras"))
    assert saved_identity(path) == identity(model)
    assert check_model_identity(path, TINY)["signature"]["params"] == model.count_params()
    assert check_model_identity(load_model(path), TINY, identity(model)) == identity(model)
    wider = {**TINY, "stem_filters": 8}
    with pytest.raises(ValueError, match=r"^Invalid model='.*m.keras': not the expected model \(config "
                                         r"differs in \['stem_filters'\]: stem_filters: 4 vs expected 8") as err:
        check_model_identity(path, wider)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"params vs expected .*; file layer 'stem"):
        check_model_identity(path, expected=identity(build_model(wider)))
    # a file without quadkeras' members (plain Keras, or written before them): its layers
    # are compared with the model the expected config builds
    keras.models.save_model(model, tmp_path / "plain.keras")
    assert saved_identity(str(tmp_path / "plain.keras")) is None
    check_model_identity(str(tmp_path / "plain.keras"), TINY)
    with pytest.raises(ValueError, match=r"plain.keras.*not the expected model.*params"):
        check_model_identity(str(tmp_path / "plain.keras"), wider)
    legacy = os.path.join(os.path.dirname(__file__), "data", "legacy_quantizers.keras")
    assert saved_identity(legacy) is None
    assert check_model_identity(load_model(legacy))["signature"]["layers"]  # loads, no identity


@pytest.mark.jax
def test_quickstart_resume_continues_the_newest_run_folder(tmp_path):
    from quadkeras.training.work_dir import stage_run_folder

    base = tmp_path / "runs"
    fresh = stage_run_folder(str(base), False, "float")
    assert os.path.dirname(fresh) == str(base) and not os.path.exists(fresh)
    with pytest.raises(ValueError, match=r"^Invalid resume=True: work_dir=.*runs' holds no earlier run"):
        stage_run_folder(str(base), True, "float")
    for name in ("20240101-000000", "20240102-000000"):
        os.makedirs(base / name / "float")
        (base / name / "float" / "state.json").write_text("{}")
    os.makedirs(base / "20240103-000000" / "float")  # no state.json: not a run to continue
    assert stage_run_folder(str(base), True, "float") == str(base / "20240102-000000")
    run = str(base / "20240101-000000")
    assert stage_run_folder(run, True, "float") == run  # a run folder named directly
