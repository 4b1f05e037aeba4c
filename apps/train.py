"""`python apps/train.py ...` from a checkout = `quadkeras-train ...`: the app is `quadkeras.cli.train`."""

import sys

from quadkeras.cli import train

if __name__ == "__main__":
    train.main()
else:  # `import train` with apps/ on sys.path (old scripts and tests) is the app module itself
    sys.modules[__name__] = train
