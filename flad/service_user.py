"""The user the service runs as, for `flad init --owner`: who owns what init writes.

`sudo flad init` writes as root, but under systemd flad runs as its own user (`flad`),
and a key only root can read is a service that fails at its first connection. So init
is told the service user: everything it writes (keys, .cer, a new configuration, the
drop folders) is handed over to that user, and every file it only names (the signing
key, a passphrase file, the certificate) is checked for what that user can read, with
the command that fixes it. The rules are those `flad check` applies when it runs as
that user (flad/keyfiles.py), so init's advice and check's verdict cannot disagree.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flad import keyfiles

__all__ = ["DropFolder", "OwnerError", "ServiceUser", "drop_folders", "hand_over", "make_folders",
           "read_problems", "resolve"]


class OwnerError(Exception):
    """--owner names no user, or a user this process cannot give files to."""


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    groups: frozenset[int]  # the primary group and every group it is a member of


def resolve(name: str) -> ServiceUser:
    """The user `name` (or a number), refused when only root could give files to it."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise OwnerError(f"--owner {name!r}: no such user on this machine (the README's "
                         "systemd section creates the user flad with systemd-sysusers)") from None
    euid = os.geteuid()
    if euid != 0 and entry.pw_uid != euid:
        raise OwnerError(f"--owner {entry.pw_name}: only root can give files to another user; "
                         f"run flad init with sudo, or as {entry.pw_name}")
    groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def hand_over(paths: Iterable[Path], user: ServiceUser) -> list[Path]:
    """Give `paths` (files and folders init made) to `user` and its primary group; the
    modes stay as written. Returns those whose owner changed."""
    changed = []
    for path in paths:
        st = path.lstat()
        if (st.st_uid, st.st_gid) != (user.uid, user.gid):
            os.chown(path, user.uid, user.gid, follow_symlinks=False)
            changed.append(path)
    return changed


@dataclass(frozen=True)
class DropFolder:
    path: Path
    mode: int


def drop_folders(outbox: Path, inbox: Path, application: str) -> tuple[DropFolder, ...]:
    """The folders a new channel needs before the payroll side can use it.

    The drop folder of the application is group-writable (the drop group writes files
    into it); the rest is group-readable only, so the drop group reads refusals and
    replies but cannot write beside flad. The set-group-ID bit passes the group down to
    every folder flad makes later (rejected/, sent/, the replies).
    """
    return (DropFolder(outbox, 0o2750), DropFolder(outbox / "test", 0o2750),
            DropFolder(outbox / "test" / application, 0o2770),
            DropFolder(inbox, 0o2750), DropFolder(inbox / "test", 0o2750))


def make_folders(folders: Iterable[DropFolder], user: ServiceUser | None) -> list[Path]:
    """Create the missing `folders` with their modes; an existing folder is left as it is.

    Owner: `user` when given, else whoever runs init. Group: that of the folder it is made
    in (for /srv/flad, the drop group the tmpfiles line gives it). Returns those made.
    """
    made: list[Path] = []
    for folder in folders:
        missing = [p for p in (folder.path, *folder.path.parents)
                   if not (p.exists() or p.is_symlink())]
        for path in reversed(missing):  # the channel's own folder above them: 2750 too
            _make(path, folder.mode if path == folder.path else 0o2750, user)
            made.append(path)
    return made


def _make(path: Path, mode: int, user: ServiceUser | None) -> None:
    path.mkdir(mode=0o700)
    group = path.parent.stat().st_gid
    if user is not None:
        os.chown(path, user.uid, group)
    elif os.geteuid() == 0:
        os.chown(path, -1, group)
    os.chmod(path, mode)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _closed_folder(path: Path, user: ServiceUser) -> Path | None:
    """The first folder above `path` that `user` cannot pass through, if any."""
    for folder in reversed(path.parents):
        try:
            st = folder.stat()
        except OSError:
            return None
        if user.uid == 0:
            return None
        bit = (stat.S_IXUSR if st.st_uid == user.uid else
               stat.S_IXGRP if st.st_gid in user.groups else stat.S_IXOTH)
        if not st.st_mode & bit:
            return folder
    return None


def read_problems(user: ServiceUser, private: Iterable[tuple[Path, str]],
                  public: Iterable[tuple[Path, str]]) -> list[str]:
    """What `user` will not be able to read, each with its fix.

    `private` files (keys, passphrase files) must be the user's own at 0600, exactly as
    `flad check` run by that user demands; `public` ones (certificate, configuration)
    need only be readable by it.
    """
    private, public = list(private), list(public)
    problems: list[str] = []
    for path, what in private + public:
        closed = _closed_folder(path.absolute(), user)
        if closed is not None:
            st = closed.stat()
            problems.append(f"{user.name} cannot reach {what} {path}: folder {closed} (owner "
                            f"{keyfiles.user_name(st.st_uid)}, group {_group_name(st.st_gid)}, "
                            f"mode {stat.S_IMODE(st.st_mode):04o}) is closed to it")
    for path, what in private:
        try:
            st = path.stat()
        except OSError:
            continue  # the loaders already said it cannot be read
        problem = keyfiles.mode_owner_problem(path, st, what, user.uid)
        if problem is not None:
            problems.append(problem)
    for path, what in public:
        try:
            st = path.stat()
        except OSError:
            continue
        bit = (stat.S_IRUSR if st.st_uid == user.uid else
               stat.S_IRGRP if st.st_gid in user.groups else stat.S_IROTH)
        if user.uid != 0 and not st.st_mode & bit:
            problems.append(f"{what} {path} cannot be read by {user.name} (owner "
                            f"{keyfiles.user_name(st.st_uid)}, group {_group_name(st.st_gid)}, "
                            f"mode {stat.S_IMODE(st.st_mode):04o}); fix it with: chgrp "
                            f"{_group_name(user.gid)} {path} && chmod 640 {path}")
    return problems
