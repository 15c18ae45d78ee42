"""An outbox as payroll systems see it: which sub-folders are flad's, which names are theirs.

Shared by the claimer (which takes files) and `flad check`'s look for strays (which only
names them), so that the check does not load the watcher, the spool or the journal to
know what a drop folder's work in progress looks like.
"""

from __future__ import annotations

#: Sub-folders of an outbox that flad writes itself and never watches.
OWN_FOLDERS = ("rejected", "sent")
#: Names a payroll system writes under before renaming into place: never taken.
IGNORED_SUFFIXES = (".tmp", ".part", ".partial")


def is_ignored(name: str) -> bool:
    """A dot file or a temporary name: still being written, or not meant for flad."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)
