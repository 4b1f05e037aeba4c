"""quadkeras.utils.progress.track: a Keras Progbar in a terminal, nothing in logs (CI)."""

import io
import sys

import pytest

from quadkeras.utils.progress import track


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.jax
def test_quiet_without_a_terminal(capsys):
    assert list(track(iter(range(5)), total=5, label="decoding")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().out == ""


@pytest.mark.jax
def test_progbar_in_a_terminal(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert list(track(["a", "b", "c"], label="probing 3 layers", unit_name="layer")) == ["a", "b", "c"]
    out = terminal.getvalue()
    assert out.startswith("probing 3 layers\n") and "3/3" in out, out


def test_litert_parity_shows_its_batches_in_a_terminal(monkeypatch):
    import keras
    import numpy as np

    if keras.backend.backend() != "tensorflow":
        pytest.skip("LiteRT parity runs under the TensorFlow backend")
    import tensorflow as tf

    from quadkeras.export import run_litert

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    out = run_litert(content, np.ones((600, 4), "float32"), batch_size=256)
    assert out.shape == (600, 2)
    assert "LiteRT parity" in terminal.getvalue() and "3/3" in terminal.getvalue()
