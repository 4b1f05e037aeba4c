"""`python apps/auto_build.py ...` from a checkout = `quadkeras-auto-build ...`: the app is `quadkeras.cli.auto_build`."""

import sys

from quadkeras.cli import auto_build

if __name__ == "__main__":
    auto_build.main()
else:  # `import auto_build` with apps/ on sys.path (old scripts and tests) is the app module itself
    sys.modules[__name__] = auto_build
