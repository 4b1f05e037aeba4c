"""Progress bars (`keras.utils.Progbar`) for long work that `fit` does not cover — data
decoding, export calibration and parity, auto-builder probes — shown only in an interactive
terminal (`sys.stdout.isatty()` and Keras interactive logging on), so CI logs stay quiet.

Example:

>>> sum(track(range(4), label="summing"))  # no terminal here: no bar, same items
6
"""

import sys

import keras


def interactive():
    """True when a progress bar would be seen: stdout is a terminal and Keras logs interactively."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty()) and keras.config.is_interactive_logging_enabled()


def track(iterable, total=None, label=None, unit_name="step"):
    """Yield the items of `iterable`; in an interactive terminal also draw a Progbar.

    `total` defaults to `len(iterable)` when it has one (else the bar counts without a target);
    `label` is printed once above the bar.
    """
    if not interactive():
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if label:
        print(label, flush=True)
    bar = keras.utils.Progbar(total, unit_name=unit_name)
    count = 0
    for item in iterable:
        yield item
        count += 1
        bar.update(count)
