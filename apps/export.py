"""`python apps/export.py ...` from a checkout = `quadkeras-export ...`: the app is `quadkeras.cli.export`.

KERAS_BACKEND defaults to tensorflow here (set before Keras is imported), as it always did.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from quadkeras.cli import export  # noqa: E402

if __name__ == "__main__":
    export.main()
else:  # `import export` with apps/ on sys.path is the app module itself
    sys.modules[__name__] = export
