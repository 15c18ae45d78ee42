"""Where flad keeps the files it took: the spool, and the sent and rejected folders.

Every path of a taken file is named here, once: the spool file of a drop (a random
prefix, then the drop name), its FS kept beside it, the folder where it is archived
once sent, and the folder where it goes back to the payroll side with its reason.
The one rejection routine is here too: the claimer, the channel's stages and
`flad resend` all go through it, so a refusal is always journaled first and moved
second.

The spool of a channel lives in its outbox, `<outbox>/.flad-spool/` (flad's own, mode
0700): on the outbox's file system, so that taking a file is one rename even under
the systemd unit, whose `StateDirectory=` and `ReadWritePaths=` make the state folder
and /srv/flad two mounts between which a rename is a copy. The folders shared with
the payroll side (rejected/, sent/) are opened by descriptor, never through a link.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from flad import durable, filemodes, logs, safedir
from flad.config import ChannelConfig
from flad.droplayout import OWN_FOLDERS
from flad.journal import Journal, Submission

REASON_SUFFIX = ".reason.txt"
#: The spool folder in each outbox (a dot name: never a drop folder nor a stray).
SPOOL_FOLDER = ".flad-spool"
#: The length of what `spool_file` puts before a drop name, the claim's prefix included.
NAME_OVERHEAD = len(".claim-") + 13
#: Files flad hands back or keeps where the payroll side reads them: flad's to write.
SHARED_FILE_MODE = 0o640


def text_name(name: str) -> str:
    """A file name as text the journal and the logs can hold.

    os functions give undecodable bytes of a name as lone surrogates, which no UTF-8
    text (SQLite, JSON logs) can hold: they are written `\\xNN`, the rest unchanged.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def spool_root(channel: ChannelConfig) -> Path:
    return channel.outbox / SPOOL_FOLDER


def legacy_spool_root(state_dir: Path) -> Path:
    """Where the spool was before it moved into the outbox: files left there still go."""
    return state_dir / "spool"


def spool_dir(channel: ChannelConfig, environment: str, application: str) -> Path:
    """The spool folder of one drop folder: in the outbox, flad's own."""
    return spool_root(channel) / environment / application


def open_spool(channel: ChannelConfig, environment: str, application: str) -> int:
    """The spool folder of a drop folder by descriptor, made if missing, checked flad's.

    Raises safedir.FolderReplaced when a part is a link or the spool is not flad's.
    """
    fd = safedir.open_below(channel.outbox, [SPOOL_FOLDER], create=True, mode=0o700)
    try:
        safedir.own_private(fd)
        for part in (environment, application):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=fd)
            child = safedir.open_at(fd, part)
            os.close(fd)
            fd = child
            safedir.own_private(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def spool_file(folder: Path, drop_name: str) -> Path:
    """A fresh spool name for a drop: a random prefix keeps two drops of one name apart."""
    return folder / f"{uuid.uuid4().hex[:12]}_{text_name(drop_name)}"


def drop_name(spool_path: Path) -> str:
    """The drop name a spool file was taken under (the inverse of `spool_file`)."""
    name = spool_path.name
    return name.split("_", 1)[1] if "_" in name else name


def fs_path(spool_path: Path) -> Path:
    """The FS kept next to the spooled FI, hidden: spool recovery never takes it for a drop.

    Named before the submission has a number: the FS is made while the file is checked.
    """
    return spool_path.with_name(f".{spool_path.name}.fs")


def sent_folder(channel: ChannelConfig, environment: str) -> Path:
    return channel.outbox / "sent" / environment


def rejected_folder(channel: ChannelConfig, environment: str, application: str) -> Path:
    return channel.outbox / "rejected" / environment / application


def reason_path(rejected: Path) -> Path:
    """The one-line reason written next to a rejected file."""
    return rejected.with_name(rejected.name + REASON_SUFFIX)


def one_line(reason: str) -> str:
    return " ".join(reason.split())


@contextlib.contextmanager
def opened_folder(path: Path) -> Iterator[int]:
    """A folder of a taken file by descriptor: walked without links below its outbox.

    The folders below `<outbox>` are shared with the payroll side; the outbox itself
    (and the state folder of an older spool) is the administrator's, opened as a path.
    """
    for marker in (SPOOL_FOLDER, *OWN_FOLDERS):
        if marker in path.parts:
            i = len(path.parts) - 1 - path.parts[::-1].index(marker)
            root = Path(*path.parts[:i])
            with safedir.opened(root, list(path.parts[i:]), create=True) as fd:
                yield fd
            return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def move_file(source: Path, target: Path, *, mode: int | None = SHARED_FILE_MODE,
              sync: bool = True) -> None:
    """Move a file of flad's by descriptor (rename, or a checked copy across mounts).

    The target keeps flad as owner and gets `mode` (readable by the drop group, written
    by flad alone); a link at either end is never followed.
    """
    with opened_folder(source.parent) as src, opened_folder(target.parent) as dst:
        _move_at(src, source.name, dst, target.name, mode)
        if sync:
            os.fsync(dst)
            os.fsync(src)


def _move_at(src: int, name: str, dst: int, new: str, mode: int | None) -> None:
    try:
        os.rename(name, new, src_dir_fd=src, dst_dir_fd=dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_at(src, name, dst, new)
    if mode is not None:
        _chmod_own(dst, new, mode)


def _copy_at(src: int, name: str, dst: int, new: str) -> None:
    """Across mounts: copy from a descriptor into a fresh file, unlink the same inode."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=src)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        tmp = f".{uuid.uuid4().hex[:8]}.partial"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                      | os.O_CLOEXEC, SHARED_FILE_MODE, dir_fd=dst)
        try:
            offset = 0
            while chunk := os.pread(fd, 1024 * 1024, offset):
                offset += len(chunk)
                durable.write_all(out, chunk)
            os.fsync(out)
        finally:
            os.close(out)
        os.rename(tmp, new, src_dir_fd=dst, dst_dir_fd=dst)
        os.fsync(dst)
    finally:
        os.close(fd)
    now = os.stat(name, dir_fd=src, follow_symlinks=False)
    if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
        os.unlink(name, dir_fd=src)


def _chmod_own(folder: int, name: str, mode: int) -> None:
    """chmod a file of flad's through a descriptor: never through a link, never another's.

    A file the drop group is to read also gets the folder's group: one made in the
    spool may carry flad's own group, and `sent/` or `rejected/` would then show payroll
    a file it cannot open."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=folder)
    except OSError:
        return  # a link (refused in place): left as it is
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1:
            group = os.fstat(folder).st_gid
            if mode & 0o040 and st.st_gid != group:
                with contextlib.suppress(PermissionError):  # flad not in that group
                    os.fchown(fd, -1, group)
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def write_reason(target: Path, reason: str) -> None:
    """The reason file next to a rejected one, written by descriptor (no link followed)."""
    with opened_folder(target.parent) as fd:
        write_at(fd, reason_path(target).name, (reason + "\n").encode())


def write_at(folder: int, name: str, data: bytes, mode: int = SHARED_FILE_MODE) -> None:
    """Write through a fresh temporary name (O_EXCL, no link) and rename, synced."""
    tmp = f".{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=folder)
    try:
        os.fchmod(fd, mode)  # `mode` whatever the umask (flad's is 0077: filemodes)
        durable.write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    os.fsync(folder)


def reject(journal: Journal, channel: ChannelConfig, sub: Submission, reason: str) -> None:
    """Journal the refusal with its reason, then move the file next to it.

    The journal comes first: a rejected folder that cannot be written must not leave
    the file `received`, to be checked (and refused) again at every turn. The move is
    finished at the next start (`finish_rejection`).
    """
    log = logs.get("flad.spool").bind(channel=channel.name)
    reason = one_line(reason)
    target_dir = rejected_folder(channel, sub.environment, sub.application)
    try:
        with opened_folder(target_dir) as folder:
            target = target_dir / _free_name_at(folder, sub.drop_name, f"{sub.id}")
    except OSError:  # journaled all the same; the move is tried again at the next start
        target = target_dir / sub.drop_name
    journal.mark_rejected(sub.id, reason, str(target))
    log.warning("file_rejected", submission=sub.id, drop_name=sub.drop_name, reason=reason,
                rejected_path=str(target))
    fresh = journal.get(sub.id)
    assert fresh is not None
    try:
        finish_rejection(fresh)
    except OSError as exc:
        log.error("rejected_file_not_moved", submission=sub.id, drop_name=sub.drop_name,
                  error=exc.strerror or str(exc), spool_path=sub.spool_path,
                  action="it stays in the spool; flad moves it at its next start")


def finish_rejection(sub: Submission) -> None:
    """Move a spooled file next to its reason; idempotent (runs again after a crash)."""
    assert sub.rejected_path
    target = Path(sub.rejected_path)
    write_reason(target, sub.error or "")
    spool = Path(sub.spool_path)
    if os.path.lexists(spool) and spool != target:
        with (contextlib.suppress(FileNotFoundError),  # signed, then found a duplicate
              opened_folder(spool.parent) as folder):
            os.unlink(fs_path(spool).name, dir_fd=folder)
        move_file(spool, target)
        filemodes.share_file(target, target.parent)  # the group of its folder: payroll's


def reject_entry(journal: Journal, channel: ChannelConfig, environment: str,
                 application: str, folder_path: Path, folder: int, name: str,
                 reason: str, *, drop_name: str | None = None) -> Path | None:
    """Refuse an entry that may not be read (a link, a pipe, a name too long), unopened.

    `name` lies in the folder `folder` (a drop folder, or the spool for an entry that
    turned out to be a link once renamed in). Journal first, as `reject`: the row names
    the entry where it lies and where it goes; then one rename (which never follows a
    link) moves it there. When the move fails the entry stays, and the next look at the
    folder finishes the move of the same row instead of refusing it again. Returns the
    rejected path once moved; raises OSError (FileNotFoundError when it vanished) when
    it was not. `drop_name` is the name it was dropped under, when it lies under
    another (renamed into the spool).
    """
    reason = one_line(reason)
    dropped = drop_name if drop_name is not None else name
    shown = text_name(dropped)
    where = folder_path / text_name(name)
    earlier = journal.by_spool_path(str(where))
    if (earlier is not None and earlier.rejected_path
            and not os.path.lexists(earlier.rejected_path)
            and _there_since(folder, name, earlier.received_at)):
        target = Path(earlier.rejected_path)  # refused before, the move still to do
    else:
        target_dir = rejected_folder(channel, environment, application)
        try:
            with opened_folder(target_dir) as dst:
                target = target_dir / _free_name_at(dst, dropped, uuid.uuid4().hex[:8])
        except OSError:  # journaled all the same; the move is tried at the next look
            target = target_dir / shown
        sub_id = journal.add_received(
            channel=channel.name, application=application, environment=environment,
            drop_name=shown, spool_path=str(where), sha256="", size=0)
        journal.mark_rejected(sub_id, reason, str(target))
        logs.get("flad.spool").warning("file_rejected", channel=channel.name,
                                       submission=sub_id, drop_name=shown,
                                       environment=environment, application=application,
                                       reason=reason, rejected_path=str(target))
    with opened_folder(target.parent) as dst:
        # a rename never opens or follows the entry (a name that is not UTF-8 comes
        # back under its escaped text, the name the journal and the reason give)
        os.rename(name, target.name, src_dir_fd=folder, dst_dir_fd=dst)
        write_at(dst, reason_path(target).name, (reason + "\n").encode())
    return target


def _there_since(folder: int, name: str, when: float) -> bool:
    """The entry lay there, unchanged, when that row was written: the same one, whose
    move failed, and not a new drop under the same name after the first was cleaned up
    (a rename into the folder or a new file changes its ctime)."""
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError:
        return False
    return st.st_ctime <= when


def _free_name_at(folder: int, name: str, hint: str) -> str:
    """`name` in the folder, or one with `hint` when taken; cut to fit the name limit."""
    limit = safedir.name_max(folder) - len(REASON_SUFFIX)
    for candidate in (text_name(name), f"{text_name(name)}.{hint}"):
        if len(os.fsencode(candidate)) > limit:
            continue
        try:
            os.stat(candidate, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return candidate
    return f"{hint}.name-too-long"


class SpoolChanged(Exception):
    """The spooled bytes are not those the journal recorded when the file was taken."""


def read_verified(sub: Submission, limit: int) -> bytes:
    """The spooled bytes of `sub`, never through a link, compared with its journaled hash.

    Raises SpoolChanged (with the reason to give) on a mismatch, OSError when it cannot
    be read, and ValueError when it is larger than `limit`.
    """
    fd = os.open(sub.spool_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > limit:
            raise ValueError(st.st_size)
        data = os.pread(fd, st.st_size + 1, 0)
        while chunk := os.pread(fd, 1024 * 1024, len(data)):
            data += chunk
    finally:
        os.close(fd)
    _compare(sub, hashlib.sha256(data).hexdigest())
    return data


def verify(sub: Submission) -> None:
    """Compare the spooled file with its journaled sha256, streamed (SpoolChanged if not)."""
    from flad import taking

    digest, _ = taking.sha256_of(None, sub.spool_path)
    _compare(sub, digest)


def _compare(sub: Submission, digest: str) -> None:
    if sub.sha256 and digest != sub.sha256:
        raise SpoolChanged(
            f"the spooled file changed after flad took it (sha256 {digest[:16]}..., "
            f"recorded {sub.sha256[:16]}...): it is not signed nor sent; drop it again")


def take_back(channel: ChannelConfig, sub: Submission) -> Path:
    """`flad resend`: move a refused or failed file back into the spool, reason removed.

    Returns its new spool path, for the journal to queue it again. The file goes
    through the claim's own taking: whatever lies in rejected/ now (the payroll side
    can write there) is made flad's own copy, and a link is never followed.
    """
    from flad import taking

    source = Path(sub.rejected_path or sub.spool_path)
    target = spool_file(spool_dir(channel, sub.environment, sub.application),
                        sub.drop_name)
    if source == target:
        return target
    expected = os.lstat(source)
    with opened_folder(source.parent) as src:
        spool_fd = open_spool(channel, sub.environment, sub.application)
        try:
            taking.take(src, source.name, spool_fd, target.name, shown=repr(sub.drop_name),
                        expected=expected, keep_up_to=-1)
            os.fsync(spool_fd)
        except taking.Refused as exc:  # put back where it was, said why
            os.rename(exc.name, source.name, src_dir_fd=exc.where, dst_dir_fd=src)
            raise ValueError(f"submission {sub.id} cannot be sent again: {exc.reason}") \
                from None
        except taking.NotTaken:
            raise ValueError(f"the file of submission {sub.id} changed while it was taken "
                             "back; try again") from None
        finally:
            os.close(spool_fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(reason_path(source).name, dir_fd=src)
    return target
