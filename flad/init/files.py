"""Writing a file `flad init` makes: created new, with its mode, never replacing one."""

from __future__ import annotations

import os
from pathlib import Path

from flad import durable

__all__ = ["private_mode_problem", "write_new"]


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` whatever the umask; never replace an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        durable.write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def private_mode_problem(path: Path) -> str | None:
    """Why a private key group or others can read may not be used, with the fix."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return (f"{path} is readable by group or others (mode {mode:04o}); fix it with: "
                f"chmod 600 {path}")
    return None
