"""One run per work_dir: an exclusive `fcntl` lock on `work_dir/.lock`, held for the run.

A second training (or resume) started on the same work_dir while the first runs fails at
once with a one-line error naming the folder and the holder's pid; the kernel drops the lock
when the holder exits, even on kill -9, so a stale lock never blocks a resume.

Example:

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with RunLock(d):
...     RunLock(d).acquire()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
quadkeras.utils.errors.RunAborted: work_dir=... is in use by another run (pid ...); ...
"""

import fcntl
import os

from quadkeras.utils.errors import RunAborted

LOCK_NAME = ".lock"


class RunLock:
    """Context manager holding the exclusive lock of `work_dir` (created if needed)."""

    def __init__(self, work_dir):
        self.work_dir = os.path.abspath(work_dir)
        self.path = os.path.join(self.work_dir, LOCK_NAME)
        self._fd = None

    def acquire(self):
        os.makedirs(self.work_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunAborted(f"work_dir={self.work_dir!r} is in use by another run (pid {holder}); "
                             "wait for it to finish or choose another --work_dir "
                             "(nothing was written).") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
