"""`python apps/summary.py ...` from a checkout = `quadkeras-summary ...`: the app is `quadkeras.cli.summary`."""

import sys

from quadkeras.cli import summary

if __name__ == "__main__":
    summary.main()
else:  # `import summary` with apps/ on sys.path (old scripts and tests) is the app module itself
    sys.modules[__name__] = summary
