"""Old import name of `quadkeras.cli.flag_table` (scripts and tests that put apps/ on sys.path)."""

import sys

from quadkeras.cli import flag_table

sys.modules[__name__] = flag_table
