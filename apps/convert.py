"""`python apps/convert.py ...` from a checkout = `quadkeras-convert ...`: the app is `quadkeras.cli.convert`."""

import sys

from quadkeras.cli import convert

if __name__ == "__main__":
    convert.main()
else:  # `import convert` with apps/ on sys.path (old scripts and tests) is the app module itself
    sys.modules[__name__] = convert
