"""quadkeras.report.plots: each plot writes a valid, non-empty PNG from the real objects
(a Keras CSVLogger history, a model summary, auto-builder scores, a BSQ sweep)."""

import os

import keras
import numpy as np
import pytest

from tests.backend_utils import assert_png

pytest.importorskip("matplotlib")


@pytest.mark.jax
def test_history_curves_from_csv_logger(tmp_path):
    from quadkeras.report import plot_history, read_history
    from quadkeras.training.callbacks import LearningRateLogger

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["acc"])
    csv_path = str(tmp_path / "history.csv")
    x, y = np.random.rand(32, 4).astype("float32"), np.arange(32) % 3
    model.fit(x, y, epochs=3, validation_data=(x, y), verbose=0,
              callbacks=[LearningRateLogger(), keras.callbacks.CSVLogger(csv_path)])
    history = read_history(csv_path)
    assert {"epoch", "loss", "val_loss", "acc", "val_acc", "lr"} <= set(history)
    assert len(history["loss"]) == 3
    assert_png(plot_history(csv_path, str(tmp_path / "sub" / "curves.png")))
    with pytest.raises(ValueError, match="no loss/acc/lr"):
        plot_history({"epoch": [0], "foo": [1.0]}, str(tmp_path / "x.png"))


def test_layers_ri_and_sweep(tmp_path):
    from quadkeras.autobuilder.scores import LayerScore
    from quadkeras.models import build_model
    from quadkeras.report import plot_layers, plot_ri, plot_sweep
    from quadkeras.summary import summarize

    model = build_model({"family": "vgg", "cfg": [4, "M", 4], "input_shape": [8, 8, 1],
                         "num_classes": 2, "conv": {"type": "quad"}})
    summary = summarize(model)
    assert_png(plot_layers(summary, str(tmp_path / "layers.png")))
    assert_png(plot_layers(summary.to_dict(), str(tmp_path / "layers_dict.png")))
    scores = [LayerScore("conv1", 10, 100, 0.1, 0.2, 0.5, 0.1, 0.2),
              LayerScore("conv2", 20, 200, 0.3, 0.4, 0.6, 0.001, 120.0)]
    assert_png(plot_ri(scores, str(tmp_path / "ri.png"), baseline=0.61))
    rows = [{"alpha": "FP32", "acc_after_finetune": 95.0, "average_bits": 32.0},
            {"alpha": 0.1, "acc_after_finetune": 94.0, "average_bits": 3.1},
            {"alpha": 1.0, "acc_after_finetune": 90.0, "average_bits": 1.9}]
    assert_png(plot_sweep(rows, str(tmp_path / "sweep.png")))


def test_try_plot_notes_a_missing_matplotlib(capsys, tmp_path):
    from quadkeras.report import try_plot

    def needs_missing_package(path):
        import quadkeras_no_such_plot_lib  # noqa: F401

    assert try_plot(needs_missing_package, str(tmp_path / "x.png")) is None
    assert "quadkeras_no_such_plot_lib is not installed" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "x.png")


def test_accuracy_vs_added_params(tmp_path):
    from quadkeras.report import plot_accuracy_vs_params

    rows = [{"label": "float", "added_params": 0, "accuracy": 81.3},
            {"label": "quad gradient", "added_params": 130_000, "accuracy": 82.0}]
    assert_png(plot_accuracy_vs_params(rows, str(tmp_path / "acc.png"), baseline=81.28))
