"""Tiny helpers shared by the absl apps: run the app from a checkout, show the backend.

Example:

>>> backend_line()[:8]
'backend='
"""

import functools
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def backend_line():
    """'backend=<name> keras=<version>' for the start-up message."""
    import keras

    return f"backend={keras.backend.backend()} keras={keras.__version__}"


def one_line_errors(main):
    """Wrap an absl `main` so bad input ends as `error: <one line>` (exit 1), no traceback.

    Library functions raise ValueError / FileNotFoundError with a message that names the
    argument (or file) and the allowed values, `RunAborted` when a run stops on purpose
    (diverged loss, locked work_dir); an OSError of the environment (full disk, read-only
    folder) is shown with its path. Anything else keeps its traceback: it is a bug.
    Ctrl-C ends as one line `interrupted: ...` (for a training run: what was kept and
    "--resume" to continue it), exit 130 like any process stopped by SIGINT.
    """
    from quadkeras.utils.errors import INTERRUPTED_EXIT, interrupted_line, user_error_line

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except KeyboardInterrupt as err:
            print(interrupted_line(err), file=sys.stderr, flush=True)
            raise SystemExit(INTERRUPTED_EXIT) from None
        except Exception as err:  # noqa: BLE001 (user_error_line picks; the rest is re-raised)
            line = user_error_line(err)
            if line is None:
                raise
            raise SystemExit(f"error: {line}") from None

    return wrapped


def parse_flags(argv):
    """absl flag parsing whose errors (unknown flag, bad value, missing or unreadable
    flagfile) end as one line `error: ...` (exit 1) like the rest of the apps."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except UnicodeDecodeError as err:
        files = [a.split("=", 1)[1] for a in argv if a.startswith("--flagfile=")]
        raise SystemExit(f"error: Invalid flagfile={', '.join(files) or '?'}: not a text file "
                         f"({err.reason} at byte {err.start}).") from None
    except (flags.Error, OSError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SystemExit(f"error: {text.replace('ERROR:: ', '')}") from None


def run(main, argv=None):
    """`absl.app.run(main)` with `one_line_errors` and `parse_flags`."""
    from absl import app

    app.run(one_line_errors(main), argv=argv, flags_parser=parse_flags)
