"""`python apps/quadratize.py ...` from a checkout = `quadkeras-quadratize ...`: the app is `quadkeras.cli.quadratize`."""

import sys

from quadkeras.cli import quadratize

if __name__ == "__main__":
    quadratize.main()
else:  # `import quadratize` with apps/ on sys.path (old scripts and tests) is the app module itself
    sys.modules[__name__] = quadratize
