"""Tiny helpers shared by the absl apps: run the app from a checkout, show the backend.

Example:

>>> backend_line()[:8]
'backend='
"""

import functools
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def backend_line():
    """'backend=<name> keras=<version>' for the start-up message."""
    import keras

    return f"backend={keras.backend.backend()} keras={keras.__version__}"


def one_line_errors(main):
    """Wrap an absl `main` so bad input ends as `error: <one line>` (exit 1), no traceback.

    Library functions raise ValueError / FileNotFoundError with a message that names the
    argument and the allowed values; the apps show exactly that line.
    """
    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except (ValueError, FileNotFoundError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SystemExit(f"error: {first}") from None

    return wrapped


def run(main, argv=None):
    """`absl.app.run(main)` with `one_line_errors`."""
    from absl import app

    app.run(one_line_errors(main), argv=argv)
