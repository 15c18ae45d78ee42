"""Private files (keys, passphrase files): who may read them, and the command that fixes it.

A key the service cannot read only shows up hours later as "Permission denied" in a
log, and a key that others can read is a leak; both are found when the configuration
loads and named with the exact `chown`/`chmod` that fixes them. The usual way into the
first one is a file written by root (`sudo flad init` without `--owner`) for a service
that runs as its own user, so the message names the owner and the user running flad.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

__all__ = ["mode_owner_problem", "private_file_problem", "user_name"]


def user_name(uid: int) -> str:
    """The login name of `uid`, or the number when no account has it."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def mode_owner_problem(path: Path, st: os.stat_result, what: str, euid: int) -> str | None:
    """Why `st` (the stat of `path`) is wrong for a private file read by `euid`, or None.

    Pure: the caller gives the stat and the user, so every case is testable without
    root. Root reads every file, so for root only the mode counts.
    """
    mode = stat.S_IMODE(st.st_mode)
    other_owner = euid != 0 and st.st_uid != euid
    owner, me = user_name(st.st_uid), user_name(euid)
    if mode & 0o077:
        if other_owner:
            return (f"{what} {path} is readable by group or others (mode {mode:04o}) and owned "
                    f"by {owner}, not by {me} who runs flad; fix it with: chown {me} {path} "
                    f"&& chmod 600 {path}")
        return (f"{what} {path} is readable by group or others (mode {mode:04o}); fix it "
                f"with: chmod 600 {path}")
    if other_owner:
        # Running flad as the owner is the other way out, unless that owner is root.
        other_way = f" (or run flad as {owner})" if st.st_uid != 0 else ""
        return (f"{what} {path} is owned by {owner} (mode {mode:04o}), not by {me} who runs "
                f"flad, so flad cannot read it; fix it with: chown {me} {path}{other_way}")
    return None


def private_file_problem(path: Path, what: str, *, owner: bool = True) -> str | None:
    """Why the private file `path` cannot serve flad, or None: missing, not a regular file,
    open to others, owned by another user, or unreadable for another reason (an ACL).

    `owner=False` for a systemd credential: systemd decides who owns it (root, with an
    ACL for the service user, or that user); flad only needs to read it.
    """
    euid = os.geteuid()
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{what} {path} does not exist"
    except OSError as exc:
        return f"{what} {path} cannot be read by {user_name(euid)}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{what} {path} is not a regular file"
    problem = mode_owner_problem(path, st, what, euid if owner else 0)
    if problem is not None:
        return problem
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"{what} {path} cannot be read by {user_name(euid)}: {exc.strerror}"
    return None
