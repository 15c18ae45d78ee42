"""`flad check` on a shared host: who else may write the shared folders, or read flad's own.

The model (flad/filemodes.py, README "A shared host: who reads what"): flad and the
drop group write the outboxes; the drop group reads the inboxes and the refusals;
nobody but flad reads the state folder, and the drop group reads neither the
configuration nor the keys. The drop group of a channel is the group of its outbox
(or inbox) folder, as the shipped tmpfiles and `flad init` make it. Each finding is
one line that names the path, what is wrong and the command that fixes it; nothing
here changes a mode.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from flad.config import Config
from flad.platform import ENVIRONMENTS

__all__ = ["exposure"]

#: how deep below an outbox or inbox folders are looked at: <env>/<app>, rejected/<env>/<app>
_DEPTH = 3


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _folders(top: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """`top` and the folders below it, `_DEPTH` levels down; links are not followed."""
    level = [top]
    for depth in range(_DEPTH + 1):
        below: list[Path] = []
        for folder in level:
            try:
                st = folder.lstat()
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            yield folder, st
            if depth < _DEPTH:
                try:
                    below += sorted(folder / name for name in os.listdir(folder)
                                    if not name.startswith("."))
                except OSError:
                    continue
        level = below


def _shared_folder(kind: str, top: Path, service_uid: int,
                   drop_folders: frozenset[Path] = frozenset()) -> list[str]:
    """Folders of an outbox or inbox writable by others than flad and the drop group,
    or by the drop group where it has nothing to write (all but `drop_folders`): a
    writable outbox root lets payroll rename flad's spool away or plant its own
    `sent/` and `rejected/`."""
    try:
        drop_gid = top.lstat().st_gid
    except OSError:
        return []  # not there yet: the folder check says so
    drop = _group(drop_gid)
    out: list[str] = []
    for folder, st in _folders(top):
        mode = stat.S_IMODE(st.st_mode)
        shown = f"{kind} folder {folder} ({_user(st.st_uid)}:{_group(st.st_gid)} {mode:04o})"
        if st.st_uid not in (service_uid, 0):
            out.append(f"{shown} belongs to {_user(st.st_uid)}, who may change its mode and "
                       f"what is in it: fix it with: chown {_user(service_uid)} "
                       f"{folder}")
        if mode & stat.S_IWOTH:
            out.append(f"{shown} is writable by every local user: fix it with: chmod o-w "
                       f"{folder}")
        if mode & stat.S_IWGRP and st.st_gid != drop_gid:
            out.append(f"{shown} is writable by group {_group(st.st_gid)}, not by the drop "
                       f"group {drop}: fix it with: chgrp {drop} {folder}")
        elif mode & stat.S_IWGRP and folder not in drop_folders:
            where = ("writes only the drop folders <outbox>/<environment>/<application>"
                     if kind == "outbox" else "only reads the inbox")
            out.append(f"{shown} is writable by the drop group {drop}, which {where}: "
                       f"fix it with: chmod g-w {folder}")
        if folder == top and mode & 0o007:
            out.append(f"{shown} is open to every local user, who may read what payroll "
                       f"drops and receives: fix it with: chmod o-rwx {folder}")
    return out


def _state(config: Config, drop_gids: set[int]) -> list[str]:
    """The state folder and the journal: flad's alone (mode 0700 and 0600)."""
    state = config.daemon.state_dir
    out: list[str] = []
    try:
        st = state.lstat()
    except OSError:
        return out
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        who = (f"the drop group {_group(st.st_gid)}" if st.st_gid in drop_gids and mode & 0o050
               else "every local user" if mode & 0o007 else f"group {_group(st.st_gid)}")
        out.append(f"state folder {state} (mode {mode:04o}) is open to {who}: the journal "
                   f"and the spool are flad's alone; fix it with: chmod 700 {state}")
    for name in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"):
        path = state / name
        try:
            jst = path.lstat()
        except OSError:
            continue
        if stat.S_IMODE(jst.st_mode) & 0o077:
            out.append(f"journal {path} (mode {stat.S_IMODE(jst.st_mode):04o}) is readable "
                       f"by others than flad: fix it with: chmod 600 {path}")
    return out


def _own_file(what: str, path: Path, drop_gids: set[int], service_gid: int, *,
              private: bool) -> list[str]:
    """The configuration and known_hosts: never writable by anyone but their owner; the
    configuration (`private`: it maps keys and folders) not readable by everyone or by
    the drop group either. known_hosts holds only public keys."""
    try:
        st = path.lstat()
    except OSError:
        return []
    mode = stat.S_IMODE(st.st_mode)
    shown = f"{what} {path} ({_user(st.st_uid)}:{_group(st.st_gid)} {mode:04o})"
    out: list[str] = []
    if mode & 0o022:
        out.append(f"{shown} may be changed by others than its owner: fix it with: chmod "
                   f"go-w {path}")
    if not private:
        return out
    if mode & stat.S_IROTH:
        out.append(f"{shown} is readable by every local user: fix it with: chmod o-r {path}")
    if mode & stat.S_IRGRP and st.st_gid in drop_gids:
        out.append(f"{shown} is readable by the drop group {_group(st.st_gid)}: fix it with: "
                   f"chgrp {_group(service_gid)} {path}")
    return out


def _config_folder(config: Config, drop_gids: set[int], service_gid: int) -> list[str]:
    """The configuration's folder (/etc/flad): the drop group does not list or enter it."""
    folder = config.path.parent
    try:
        st = folder.lstat()
    except OSError:
        return []
    mode = stat.S_IMODE(st.st_mode)
    if st.st_gid in drop_gids and mode & 0o050:
        return [f"configuration folder {folder} ({_user(st.st_uid)}:{_group(st.st_gid)} "
                f"{mode:04o}) is open to the drop group {_group(st.st_gid)}, which has no "
                f"business with the keys: fix it with: chgrp {_group(service_gid)} {folder}"]
    return []


def _membership(service_uid: int, service_gid: int, drop_gids: set[int]) -> list[str]:
    """flad must be in each drop group: it reads dropped files, and gives replies to it."""
    try:
        name = pwd.getpwuid(service_uid).pw_name
        groups = set(os.getgrouplist(name, service_gid))
    except (KeyError, OSError):
        return []
    if service_uid == 0:
        return []
    return [f"{name}, who runs flad, is not in the drop group {_group(gid)}: it cannot read "
            f"files dropped for that group, nor give it the replies; fix it with: usermod "
            f"-aG {_group(gid)} {name} (then restart flad)"
            for gid in sorted(drop_gids - groups)]


def exposure(config: Config) -> list[tuple[str, str]]:
    """(subject, message) for every place the model is not kept, in the order of check."""
    state_owner = config.daemon.state_dir.stat().st_uid \
        if config.daemon.state_dir.exists() else os.geteuid()
    # run by root (sudo flad check), flad is whoever owns the state folder
    service_uid = state_owner if os.geteuid() == 0 else os.geteuid()
    try:
        service_gid = pwd.getpwuid(service_uid).pw_gid
    except KeyError:
        service_gid = os.getegid()
    drop_gids: set[int] = set()
    for channel in config.channels:
        for top in (channel.outbox, channel.inbox):
            try:
                drop_gids.add(top.lstat().st_gid)
            except OSError:
                continue
    drop_gids.discard(service_gid)  # flad's own group is no drop group
    found: list[tuple[str, str]] = []
    for channel in config.channels:
        drops = frozenset(channel.outbox / env / app.name
                          for env in ENVIRONMENTS for app in channel.applications)
        for kind, top, writable in (("outbox", channel.outbox, drops),
                                    ("inbox", channel.inbox, frozenset())):
            found += [(f"channel {channel.name} {kind}", line)
                      for line in _shared_folder(kind, top, service_uid, writable)]
        found += [(f"channel {channel.name} sftp", line) for line in _own_file(
            "known_hosts", channel.sftp.known_hosts, drop_gids, service_gid, private=False)]
    found += [("daemon.state_dir", line) for line in _state(config, drop_gids)]
    found += [("configuration", line)
              for line in _own_file("configuration", config.path, drop_gids, service_gid,
                                    private=True)]
    found += [("configuration", line)
              for line in _config_folder(config, drop_gids, service_gid)]
    found += [("drop group", line)
              for line in _membership(service_uid, service_gid, drop_gids)]
    return found
