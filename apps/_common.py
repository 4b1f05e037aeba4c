"""Old import name of `quadkeras.cli.common` (scripts and tests that put apps/ on sys.path)."""

import sys

from quadkeras.cli import common

sys.modules[__name__] = common
