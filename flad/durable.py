"""File operations that survive a crash: the journal may only record what is on disk."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        syncfs: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # a libc without syncfs (glibc < 2.14, musl old)
        return None
    return syncfs


_SYNCFS = _load_syncfs()


def can_sync_filesystem() -> bool:
    """Whether `sync_filesystem` is there (Linux's syncfs)."""
    return _SYNCFS is not None


def sync_filesystem(path: Path) -> None:
    """Everything written on `path`'s file system made durable, in one call.

    Many small files and folders written together (a slice of reply sets) cost one
    sync instead of one per file and per folder: syncfs(2) writes out and waits for
    every dirty file and folder of that file system, and (Linux 5.8 and later) reports
    a write-back error. OSError when it fails; check `can_sync_filesystem` first.
    """
    if _SYNCFS is None:
        raise OSError(errno.ENOSYS, "syncfs is not available here", str(path))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """All of `data` to `fd`: `os.write` may take less than it is given."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file(path: Path, data: bytes, mode: int = 0o640, *, sync: bool = True) -> None:
    """Write through a temporary name, fsync, rename: readers never see half a file.

    Without `sync`, nothing is flushed: a crash of flad still leaves the whole file or
    none, but a crash of the machine may leave it empty or torn, so only a file that
    is checked before use (or can be made again) may be written that way.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # `mode` whatever the umask (flad's is 0077: filemodes)
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_dir(path.parent)
