"""`python apps/quickstart.py ...` (what `make run` runs) = `quadkeras-quickstart ...`: the app is
`quadkeras.cli.quickstart`.

KERAS_BACKEND defaults to tensorflow and TF_CPP_MIN_LOG_LEVEL to 2 here (set before Keras and
TensorFlow are imported), as they always did.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from quadkeras.cli import quickstart  # noqa: E402

if __name__ == "__main__":
    quickstart.main()
else:  # `import quickstart` with apps/ on sys.path is the app module itself
    sys.modules[__name__] = quickstart
