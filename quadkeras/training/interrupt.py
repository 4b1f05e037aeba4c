"""A Ctrl-C that no library can swallow.

Python turns SIGINT into a `KeyboardInterrupt` raised wherever the main thread happens to be.
When that is a Python function called back from C++ (TensorFlow builds a `tf.data` pipeline
that way at the start of every epoch), the C++ side can clear the exception, and the run
then trains on to the end as if the key was never pressed (seen on the JAX backend: about
one Ctrl-C in five was lost). `CtrlCLatch` keeps Python's behaviour (the interrupt is raised
at once) and also remembers it; `CtrlCCheck` raises it again at the next batch or epoch
boundary if it did not get through.

Example:

>>> import keras
>>> with CtrlCLatch() as latch:
...     check = CtrlCCheck(latch)  # first in model.fit's callbacks
...     latch.check()  # no Ctrl-C yet: returns
>>> latch.pressed
False
"""

import signal
import threading

import keras


class CtrlCLatch:
    """Context manager: while active, SIGINT raises `KeyboardInterrupt` (as Python does) and
    sets `pressed`; `check()` raises it again if a library swallowed the first one.

    It takes SIGINT only from Python's default handler, in the main thread; a handler of the
    caller's (or SIGINT ignored) is left alone, and the previous handler comes back on exit.
    """

    def __init__(self):
        self.pressed = False
        self._previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _on_sigint(self, signum, frame):
        self.pressed = True
        raise KeyboardInterrupt

    def check(self):
        """Raise `KeyboardInterrupt` if Ctrl-C was pressed (it did not stop the run)."""
        if self.pressed:
            raise KeyboardInterrupt


class CtrlCCheck(keras.callbacks.Callback):
    """Calls `latch.check()` at every batch and epoch boundary; put it first in the list, so
    an epoch interrupted by Ctrl-C is not checkpointed as complete."""

    def __init__(self, latch):
        super().__init__()
        self.latch = latch

    def on_epoch_begin(self, epoch, logs=None):
        self.latch.check()

    def on_epoch_end(self, epoch, logs=None):
        self.latch.check()

    def on_train_batch_end(self, batch, logs=None):
        self.latch.check()

    def on_test_batch_end(self, batch, logs=None):
        self.latch.check()
