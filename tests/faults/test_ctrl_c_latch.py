"""A Ctrl-C swallowed by a library (TensorFlow's C++ callbacks clear a KeyboardInterrupt raised
inside them) still stops training: `CtrlCLatch` remembers it, `CtrlCCheck` raises it again."""

import os
import signal

import keras
import numpy as np
import pytest

from quadkeras.training.interrupt import CtrlCCheck, CtrlCLatch


def _swallowed_ctrl_c():
    """SIGINT delivered while code that swallows KeyboardInterrupt runs (as tf.data's does)."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes: give it some
            pass
    except KeyboardInterrupt:
        return True
    return False


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own handler, as in a terminal (a runner started in the background, e.g. with
    nohup, has SIGINT ignored and the latch would rightly leave it so)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_swallowed_ctrl_c_is_raised_again_and_the_handler_restored():
    before = signal.getsignal(signal.SIGINT)
    with CtrlCLatch() as latch:
        latch.check()  # nothing pressed: no raise
        assert _swallowed_ctrl_c() and latch.pressed
        with pytest.raises(KeyboardInterrupt):
            latch.check()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_callers_own_sigint_handler_is_left_alone():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda *a: seen.append(a[0]))
    try:
        with CtrlCLatch() as latch:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            latch.check()  # not ours to latch: no raise
        assert seen == [signal.SIGINT] and not latch.pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def test_fit_stops_at_the_next_batch_after_a_swallowed_ctrl_c():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    batches = []

    class SwallowAtBatch2(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            batches.append(batch)
            if batch == 2:
                assert _swallowed_ctrl_c()

    x, y = np.zeros((16, 4), "float32"), np.zeros((16, 2), "float32")
    with CtrlCLatch() as latch, pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=2, epochs=3, verbose=0, callbacks=[CtrlCCheck(latch), SwallowAtBatch2()])
    assert batches == [0, 1, 2]
