"""How one dropped entry becomes flad's own file in the spool, and nothing else does.

The drop folder is written by other users, who may swap a file for a link, keep a
descriptor open to write into it after the check, or drop a newer file under the same
name. So a claim is one `renameat` into the spool (which lives on the outbox's file
system for that reason), and the file renamed in is then opened without following a
link and checked with `fstat`: a link, a special file or a file with other hard links
is refused, never read. A file that belongs to someone else is copied into a fresh
file of flad's (`O_EXCL | O_NOFOLLOW`, mode 0600) while it is hashed, and the dropper's
inode is unlinked: from then on nobody but flad can change the bytes that are checked,
signed and sent. Where the rename cannot be made (EXDEV: the drop folder on another
mount) the copy reads from a descriptor checked with `fstat` and unlinks the source
only if its name still holds the inode that was copied.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from dataclasses import dataclass

#: Prefix of an entry renamed into the spool and not yet flad's own copy.
CLAIMING_PREFIX = ".claim-"
#: Prefix of flad's copy while it is written: the final name exists only once whole.
COPYING_PREFIX = ".copy-"
_CHUNK = 1024 * 1024
UNREADABLE = ("flad may not read the file (permission denied): give the flad user read "
              "access")
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Taken:
    """A file now in the spool under `name`, flad's own, with what was read of it."""

    name: str
    sha256: str
    size: int
    data: bytes | None  # kept when it fit in what the caller allowed


class NotTaken(Exception):
    """The entry was left where it was (vanished, or changing): looked at again later."""


class Refused(Exception):
    """The entry may not be sent: `reason` says why; it lies at `name` in `where`."""

    def __init__(self, reason: str, where: int, name: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where
        self.name = name


def kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def not_regular(shown: str, what: str) -> str:
    return (f"{shown} is {what}, not a regular file: flad only sends files that are "
            "written into the outbox, and never follows links")


def take(src_dir: int, src_name: str, spool_dir: int, name: str, *, shown: str,
         expected: os.stat_result, keep_up_to: int) -> Taken:
    """Move `src_name` of `src_dir` into the spool as `name`, as flad's own file.

    `shown` names the entry in reasons; `expected` is what the caller saw of it; its
    content is returned when it is at most `keep_up_to` bytes. Raises NotTaken (left in
    place) or Refused (not a file flad may read; it lies in the spool or in the drop).
    """
    claiming = CLAIMING_PREFIX + name
    try:
        os.rename(src_name, claiming, src_dir_fd=src_dir, dst_dir_fd=spool_dir)
    except FileNotFoundError:
        raise NotTaken("vanished") from None
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return _copy_across(src_dir, src_name, spool_dir, name, shown=shown,
                            expected=expected, keep_up_to=keep_up_to)
    return own(spool_dir, claiming, name, shown=shown, keep_up_to=keep_up_to)


def own(spool_dir: int, claiming: str, name: str, *, shown: str, keep_up_to: int) -> Taken:
    """Make the entry renamed in as `claiming` flad's own file `name` (also after a crash)."""
    try:
        fd = os.open(claiming, _READ, dir_fd=spool_dir)
    except PermissionError:
        raise Refused(UNREADABLE, spool_dir, claiming) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(not_regular(shown, "a symbolic link"), spool_dir, claiming) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(not_regular(shown, kind(st.st_mode)), spool_dir, claiming)
        if st.st_nlink != 1:
            raise Refused(f"{shown} has {st.st_nlink - 1} other hard link(s): flad only "
                          "sends a file that exists once, under its drop name", spool_dir,
                          claiming)
        if st.st_uid == os.geteuid():  # flad's already: nobody else can write it
            os.fchmod(fd, 0o600)
            digest, size, data = _read(fd, None, keep_up_to)
            os.rename(claiming, name, src_dir_fd=spool_dir, dst_dir_fd=spool_dir)
            return Taken(name, digest, size, data)
        taken = _copy(fd, spool_dir, name, keep_up_to)
    finally:
        os.close(fd)
    os.unlink(claiming, dir_fd=spool_dir)
    return taken


def _copy(src: int, spool_dir: int, name: str, keep_up_to: int) -> Taken:
    """A fresh file of flad's with the bytes read from `src`, hashed as they are copied.

    Written under a temporary name, synced, then renamed and the folder synced: `name`
    exists only whole, so recovery after a crash mid-copy may trust it and drop the
    claimed original only then (a torn copy under the final name once cost the original).
    """
    copying = COPYING_PREFIX + name
    out = os.open(copying, _CREATE, 0o600, dir_fd=spool_dir)
    try:
        digest, size, data = _read(src, out, keep_up_to)
        os.fsync(out)
        os.rename(copying, name, src_dir_fd=spool_dir, dst_dir_fd=spool_dir)
        os.fsync(spool_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(copying, dir_fd=spool_dir)
        raise
    finally:
        os.close(out)
    return Taken(name, digest, size, data)


def _copy_across(src_dir: int, src_name: str, spool_dir: int, name: str, *, shown: str,
                 expected: os.stat_result, keep_up_to: int) -> Taken:
    """The copy where a rename cannot be made; the source unlinked only if unchanged."""
    try:
        fd = os.open(src_name, _READ, dir_fd=src_dir)
    except FileNotFoundError:
        raise NotTaken("vanished") from None
    except PermissionError:
        raise Refused(UNREADABLE, src_dir, src_name) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a link since it was looked at
            raise NotTaken("changed") from None
        raise
    try:
        st = os.fstat(fd)
        if ((st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino)
                or not stat.S_ISREG(st.st_mode) or st.st_size != expected.st_size):
            raise NotTaken("changed")
        if st.st_nlink != 1:
            raise Refused(f"{shown} has {st.st_nlink - 1} other hard link(s): flad only "
                          "sends a file that exists once, under its drop name", src_dir,
                          src_name)
        taken = _copy(fd, spool_dir, name, keep_up_to)
    finally:
        os.close(fd)
    try:
        now = os.stat(src_name, dir_fd=src_dir, follow_symlinks=False)
    except FileNotFoundError:
        now = None
    if (now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
            or now.st_size != taken.size or now.st_mtime_ns != st.st_mtime_ns):
        # renamed away, replaced by a newer drop, or written during the copy: the copy
        # is not what lies there now; forget it, and leave whatever is there alone
        os.unlink(name, dir_fd=spool_dir)
        raise NotTaken("vanished" if now is None else "changed")
    os.unlink(src_name, dir_fd=src_dir)
    return taken


def _read(src: int, out: int | None, keep_up_to: int) -> tuple[str, int, bytes | None]:
    """Hash `src` from its start (copying it to `out`); its bytes when they fit.

    A file that may be kept is read in one buffer of its size (a list of chunks joined
    afterwards would hold it twice); a bigger one is streamed chunk by chunk.
    """
    digest = hashlib.sha256()
    data: bytes | None = None
    offset = 0
    expected = os.fstat(src).st_size
    if expected <= keep_up_to:
        data = os.pread(src, expected + 1, 0)
        offset = len(data)
        digest.update(data)
        if out is not None:
            _write_all(out, data)
        if offset > keep_up_to:
            data = None  # it grew past the limit while being read
    while chunk := os.pread(src, _CHUNK, offset):
        offset += len(chunk)
        digest.update(chunk)
        if out is not None:
            _write_all(out, chunk)
        data = None  # more than was seen at first: not kept
    return digest.hexdigest(), offset, data


def _write_all(out: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(out, view):]


def sha256_of(dir_fd: int | None, name: str) -> tuple[str, int]:
    """sha256 and size of a spooled file, streamed, never through a link."""
    fd = os.open(name, _READ, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        digest, size, _ = _read(fd, None, -1)
    finally:
        os.close(fd)
    return digest, size
