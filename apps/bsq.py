"""`python apps/bsq.py ...` from a checkout = `quadkeras-bsq ...`: the app is `quadkeras.cli.bsq`."""

import sys

from quadkeras.cli import bsq

if __name__ == "__main__":
    bsq.main()
else:  # `import bsq` with apps/ on sys.path (old scripts and tests) is the app module itself
    sys.modules[__name__] = bsq
