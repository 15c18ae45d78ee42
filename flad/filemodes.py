"""The permission model of a shared host: what flad makes, and who may read it.

The outbox and inbox are shared with the payroll systems, which run as other users in
the drop group (`flad-drop` under the shipped unit: the group of `/srv/flad`, handed
down to every folder below it by the set-group-ID bit). Everything else flad makes —
the journal, the spool, known_hosts it writes — is its own. So:

- the process umask is 0077 (`UMASK`): whatever flad creates without a reason to share
  it is readable by flad alone, under the unit (`UMask=0077`) and outside it;
- files payroll reads (the replies in the inbox, a refused file and its
  `.reason.txt`) are 0640 (`SHARED_FILE`) with the group of the folder they land in;
- folders payroll reads (`inbox/<env>`, `rejected/<env>/<app>`) are 0750 and drop
  folders (`<outbox>/<env>/<app>`) 0770, plus the set-group-ID bit the kernel passes
  down from a set-group-ID parent. flad never sets that bit itself: the unit's
  `RestrictSUIDSGID=` forbids it, and only inheritance keeps a dropped file's group
  the drop group, which is how flad reads it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flad import safedir

__all__ = ["DROP_FOLDER", "READ_FOLDER", "SHARED_FILE", "UMASK", "make_folders",
           "share_file"]

#: the process umask: flad's state and secrets are its own
UMASK = 0o077
#: a file flad writes for payroll to read: owner rw, the drop group r
SHARED_FILE = 0o640
#: a folder payroll reads (replies, refusals): the drop group enters and lists
READ_FOLDER = 0o750
#: a drop folder: the drop group writes files into it
DROP_FOLDER = 0o770

def make_folders(path: Path, mode: int = READ_FOLDER, *,
                 parents_mode: int = READ_FOLDER) -> list[Path]:
    """Make `path` (`mode`) and its missing parents (`parents_mode`); returns those made.

    The permissions are exactly those given, whatever the process umask; an existing
    folder is left as it is (`flad check` names one that is too open). See
    `safedir.mkdir_exact`: no set-ID bit is ever asked for (ValueError).
    """
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    made: list[Path] = []
    for folder in reversed(missing):
        try:
            safedir.mkdir_exact(folder, mode if folder == path else parents_mode)
        except FileExistsError:
            continue  # made meanwhile by another thread or process
        made.append(folder)
    return made


def share_file(path: Path, folder: Path) -> bool:
    """Give a file flad wrote for payroll mode 0640 and the group of `folder`.

    Only flad's own regular files are changed, through a descriptor opened without
    following a link: a file that payroll owns (it dropped it) is its own already, and
    an entry swapped for a link is never touched. When flad is not in `folder`'s group
    the group stays and False is returned (`flad check` says how to fix the groups).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # gone, or a link: the caller's own step says what happened
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return False
        gid = os.stat(folder).st_gid
        grouped = st.st_gid == gid
        if not grouped:
            try:
                os.fchown(fd, -1, gid)
                grouped = True
            except PermissionError:
                pass
        os.fchmod(fd, SHARED_FILE)
        return grouped
    except OSError:
        return False  # a courtesy to the reader, never a reason to stop a delivery
    finally:
        os.close(fd)
