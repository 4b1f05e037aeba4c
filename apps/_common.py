"""Tiny helpers shared by the absl apps: run the app from a checkout, show the backend.

Example:

>>> backend_line()[:8]
'backend='
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def backend_line():
    """'backend=<name> keras=<version>' for the start-up message."""
    import keras

    return f"backend={keras.backend.backend()} keras={keras.__version__}"
