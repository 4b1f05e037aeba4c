"""Tiny helpers shared by the absl apps: one-line errors, `--version`, the backend line, configs.

Each app is a module of `quadkeras.cli` with a `main()` entry point: the console script
`quadkeras-<app>` (pyproject.toml's `[project.scripts]`), `python -m quadkeras.cli.<app>`
and the checkout alias `python apps/<app>.py` all run it.

Example:

>>> backend_line()[:8]
'backend='
>>> version_line("quadkeras-train").startswith("quadkeras-train (quadkeras ")
True
"""

import functools
import os
import sys
import sysconfig

import keras
from absl import app, flags

import quadkeras
from quadkeras.utils.errors import INTERRUPTED_EXIT, interrupted_line, user_error_line

flags.DEFINE_boolean("version", False, "Print quadkeras' version and exit.")


def version_line(prog):
    """'<prog> (quadkeras <version>)': what every app's `--version` prints."""
    return f"{prog} (quadkeras {quadkeras.__version__})"


def configs_dir():
    """The folder of the shipped flagfiles and model configs (`configs/` in a checkout,
    `<prefix>/share/quadkeras/configs` in an installed wheel; None if neither exists).

    The flagfiles name model configs relative to the folder above it (`--model=configs/
    models/...`), so run them from there, or copy the folder to your working directory:
    `cp -r <configs_dir> configs`.

    >>> os.path.basename(configs_dir())
    'configs'
    """
    package = os.path.dirname(os.path.abspath(quadkeras.__file__))
    checkout = os.path.join(os.path.dirname(package), "configs")
    installed = os.path.join(sysconfig.get_path("data"), "share", "quadkeras", "configs")
    return next((d for d in (checkout, installed) if os.path.isdir(d)), None)


def backend_line():
    """'backend=<name> keras=<version>' for the start-up message."""
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
    """`absl.app.run(main)` with `one_line_errors` and `parse_flags`; `--version` prints
    `version_line` and exits 0 before any other flag is checked (required ones included)."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("--version", "-version", "--version=true") for a in argv[1:]):
        print(version_line(os.path.basename(argv[0])), flush=True)
        raise SystemExit(0)
    app.run(one_line_errors(main), argv=argv, flags_parser=parse_flags)
