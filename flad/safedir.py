"""Folders by descriptor: the shared folders are walked without following a link.

Whoever writes an outbox may replace one of its folders by a symbolic link (to flad's
state folder, say) between two looks. A path string is resolved again at every use, so
flad opens the folders it shares with other users here instead: one component at a
time, each with `O_DIRECTORY | O_NOFOLLOW` relative to the one before, and then works
inside them through the descriptor (`dir_fd=`, `src_dir_fd=`, `dst_dir_fd=`). A link
anywhere below the configured root is refused (`FolderReplaced`), never followed, and a
folder can be held to the device, inode and owner it had when flad first checked it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# os.umask is process-wide: a folder is made with the umask lowered for its one mkdir,
# and this lock keeps two such mkdirs from restoring each other's umask.
_umask_lock = threading.Lock()


def mkdir_exact(name: str | Path, mode: int, dir_fd: int | None = None) -> None:
    """mkdir with exactly `mode`, whatever the process umask (flad's is 0077).

    The umask is lowered for the one mkdir: a chmod after it would clear the
    set-group-ID bit the folder inherits from its parent, and setting that bit is what
    the unit's RestrictSUIDSGID= forbids. Set-ID and sticky bits are refused in `mode`
    for the same reason. A file another thread creates meanwhile gets at most `mode`.
    """
    if mode & ~0o777:
        raise ValueError(f"folder mode {mode:o}: the set-ID and sticky bits come from "
                         "the parent, never from flad (the unit forbids setting them)")
    with _umask_lock:
        old = os.umask(~mode & 0o777)
        try:
            os.mkdir(name, mode, dir_fd=dir_fd)
        finally:
            os.umask(old)


class FolderReplaced(OSError):
    """A folder is a link, not a folder, or not the one flad checked before."""


@dataclass(frozen=True)
class Identity:
    """What makes a folder the same folder: where it lives and who owns it."""

    dev: int
    ino: int
    uid: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_uid)


def open_at(parent: int | None, name: str) -> int:
    """One folder below `parent` (or an absolute/relative path when None), no link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FolderReplaced(exc.errno, f"{name} is a symbolic link or not a folder; "
                                 "flad never follows a link in a shared folder",
                                 name) from None
        raise


def open_below(root: Path, parts: tuple[str, ...] | list[str], *, create: bool = False,
               mode: int = 0o750, leaf_mode: int | None = None) -> int:
    """The folder root/parts[0]/parts[1]/..., each part opened without following a link.

    `root` is the configured folder (an administrator's choice, trusted as a path); every
    part below it is opened relative to its parent. With `create`, missing parts are
    made with exactly `mode` (0750: the drop group reads; the last part `leaf_mode` when
    given, 0770 for a drop folder), whatever the umask, keeping the set-group-ID bit the
    kernel hands down; a missing root (an outbox, an inbox) is made 0750 whatever `mode`
    says of the parts below it. The caller closes the descriptor returned.
    """
    if create:
        for missing in reversed([p for p in (root, *root.parents) if not os.path.lexists(p)]):
            with contextlib.suppress(FileExistsError):
                mkdir_exact(missing, 0o750)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    where = root
    try:
        for index, part in enumerate(parts):
            where = where / part
            if create:
                last = index == len(parts) - 1 and leaf_mode is not None
                with contextlib.suppress(FileExistsError):
                    mkdir_exact(part, leaf_mode if last and leaf_mode is not None else mode,
                                dir_fd=fd)
            child = open_at(fd, part)
            os.close(fd)
            fd = child
    except OSError as exc:
        os.close(fd)
        exc.filename = str(where)  # the whole path in messages, not the last part
        raise
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def opened(root: Path, parts: tuple[str, ...] | list[str], *, create: bool = False,
           mode: int = 0o750) -> Iterator[int]:
    """`open_below` as a context manager that closes the descriptor."""
    fd = open_below(root, parts, create=create, mode=mode)
    try:
        yield fd
    finally:
        os.close(fd)


def parts_below(root: Path, path: Path) -> list[str]:
    """The components of `path` below `root` (ValueError when it is not below it)."""
    return list(path.relative_to(root).parts)


def check_identity(fd: int, expected: Identity | None) -> Identity:
    """The folder's identity; FolderReplaced when it is not `expected`."""
    now = Identity.of(os.fstat(fd))
    if expected is not None and now != expected:
        raise FolderReplaced(errno.EEXIST, "the folder is not the one flad checked at "
                             f"start (device/inode/owner {expected.dev}/{expected.ino}/"
                             f"{expected.uid}, now {now.dev}/{now.ino}/{now.uid})")
    return now


def own_private(fd: int) -> None:
    """A folder flad keeps for itself: its own, mode 0700, or FolderReplaced."""
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        raise FolderReplaced(errno.EPERM, f"the folder belongs to uid {st.st_uid}, not to "
                             "the user flad runs as")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.fchmod(fd, 0o700)


def fsync_fd(fd: int) -> None:
    os.fsync(fd)


def name_max(fd: int) -> int:
    """The longest name (in bytes) the folder's file system accepts."""
    try:
        return int(os.fpathconf(fd, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255
