"""One flad at a time on a state folder: a lock held for the life of the process.

Two processes working one journal and one spool number, send and deliver the same
things twice: an admin who runs `flad run --once` or `flad replies` beside the service
lost reply sets that way. The lock is `flock` on a file of the state folder, so the
kernel lets it go when the holder dies, even by SIGKILL: there is no stale lock to
clean up by hand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = "flad.lock"


class StateLocked(Exception):
    """Another process holds the state folder; the message says which and what to do."""


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, command: str) -> None:
        """Take the lock now or raise `StateLocked`; never waits."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise StateLocked(
                f"another flad works on the state folder {self.path.parent} ({holder}); "
                f"only one may: {_what_to_do(holder)}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, flad {command}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor lets the lock go
            self._fd = None

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a process that did not say which"


def _what_to_do(holder: str) -> str:
    """The advice that fits the holder: a service is left to work, a one-off is waited for."""
    if ", flad run, " in f"{holder}, ":
        return ("the running service sends every drop and fetches replies every "
                "poll_seconds by itself, so stop it first (systemctl stop flad) or let it "
                "do the work")
    if "flad " in holder:
        return "wait until it ends (it is a one-off command), then run this again"
    return ("stop the service first (systemctl stop flad) or wait until the other "
            "command ends")
