"""Errors a user must act on, shown by the apps as one line `error: ...` (no traceback).

`RunAborted`: a run stopped on purpose (diverged loss, a locked work_dir, ...); the message
says what survived and what to do. `user_error_line(err)` is the one line the apps print for
such an error, a ValueError / FileNotFoundError (bad argument or input file) or an OSError of
the environment (full disk, read-only or missing folder); it returns None for anything else,
which then keeps its traceback (a genuine bug must not hide behind a one-liner).

Example:

>>> user_error_line(ValueError("Invalid lr=-1: expected a number >= 0.\\nmore"))
'Invalid lr=-1: expected a number >= 0.'
>>> import errno
>>> user_error_line(OSError(errno.ENOSPC, "No space left on device", "/runs/a/last.keras"))
"cannot write '/runs/a/last.keras': No space left on device (nothing was overwritten; free space or choose another folder)."
>>> user_error_line(KeyError("x")) is None
True
"""

import errno

# OSErrors caused by the environment, not by a bug: reported in one line naming the path.
ENVIRONMENT_ERRNOS = {errno.ENOSPC: "free space or choose another folder",
                      errno.EDQUOT: "free space or choose another folder",
                      errno.EROFS: "choose a writable folder",
                      errno.EACCES: "check the permissions or choose another folder",
                      errno.EPERM: "check the permissions or choose another folder",
                      errno.ENOENT: "check the path",
                      errno.ENOTDIR: "check the path",
                      errno.EISDIR: "check the path"}


class RunAborted(RuntimeError):
    """A run stopped on purpose; the message names the cause and what was kept."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; the message says what was kept and how to continue (still a
    `KeyboardInterrupt`, so code that catches that keeps working)."""


INTERRUPTED_EXIT = 130  # the shell's code for a process stopped by SIGINT (128 + 2)


def interrupted_line(err):
    """The one line the apps print for a Ctrl-C (`err`: the KeyboardInterrupt)."""
    if isinstance(err, RunInterrupted) and str(err).strip():
        return f"interrupted: {_first_line(err)}"
    return "interrupted: stopped by Ctrl-C (nothing partial was written); run the command again."


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def os_error_line(err):
    """One line for an environment OSError (full disk, read-only, missing path), else None."""
    if not isinstance(err, OSError) or err.errno not in ENVIRONMENT_ERRNOS:
        return None
    hint = ENVIRONMENT_ERRNOS[err.errno]
    where = f" {err.filename!r}" if err.filename else ""
    verb = ("write" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else
            "access" if err.errno in (errno.EACCES, errno.EPERM) else "use")
    return f"cannot {verb}{where}: {err.strerror or _first_line(err)} (nothing was overwritten; {hint})."


def user_error_line(err):
    """The one line to show for a user-facing error, or None (then keep the traceback)."""
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) or (
            isinstance(err, FileNotFoundError) and err.errno is not None):
        return os_error_line(err)
    if isinstance(err, (ValueError, FileNotFoundError, RunAborted)):
        return _first_line(err)
    return None
