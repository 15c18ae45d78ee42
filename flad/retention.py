"""Retention: archived files and finished journal rows that are old enough go.

`sent_retention_days` removes archived FI/FS files older than that from each
channel's `<outbox>/sent/`; `journal_retention_days` prunes finished rows (rejected,
refused, notified) older than that. Both 0 (the default) keep everything. The service
runs this at start and once a day, and logs what went.

The journal never keeps a row younger than the duplicate window
(`duplicate_window_days`): the duplicate check reads those rows. Sequence numbers
are safe whatever is pruned: they come from their own counters (see
`flad.journal.silence`).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flad import naming, safedir
from flad.config import Config
from flad.journal import Journal
from flad.platform import ENVIRONMENTS

#: How often the service applies retention.
EVERY_SECONDS = 24 * 3600.0
DAY = 86400.0


def clean_sent(folder: Path, before: float) -> tuple[int, int]:
    """Remove archived FI/FS files of `folder` last modified before `before`.

    The folder is opened without following a link, as every folder of the outbox is
    (`flad.safedir`): the outbox is shared with other users. Returns (files, bytes).
    """
    try:
        fd = safedir.open_at(None, str(folder))
    except FileNotFoundError:
        return 0, 0
    try:
        return _clean_at(fd, before)
    finally:
        os.close(fd)


def _clean_at(folder: int, before: float) -> tuple[int, int]:
    """Only regular files whose name is an FI or FS name of the grammar are touched,
    each looked at and removed through the folder's descriptor."""
    removed = freed = 0
    for name in os.listdir(folder):
        try:
            kind = naming.parse(name).type
        except naming.InvalidName:
            continue
        if kind not in ("FI", "FS"):
            continue
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= before:
                continue
            os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            continue
        removed += 1
        freed += st.st_size
    return removed, freed


def apply(config: Config, db: Journal, log: Any,
          clock: Callable[[], float] = time.time) -> None:
    """Apply both retentions once; each logs its counts (nothing when both are 0)."""
    now = clock()
    daemon = config.daemon
    if daemon.sent_retention_days > 0:
        started = time.monotonic()
        before = now - daemon.sent_retention_days * DAY
        for channel in config.channels:
            files = freed = 0
            for environment in ENVIRONMENTS:
                try:
                    with safedir.opened(channel.outbox, ["sent", environment]) as fd:
                        n, b = _clean_at(fd, before)
                except FileNotFoundError:
                    continue
                except OSError as exc:  # a link planted as sent/<env>: left alone
                    log.warning("sent_retention_failed", channel=channel.name,
                                folder=str(channel.outbox / "sent" / environment),
                                error=exc.strerror or str(exc))
                    continue
                files, freed = files + n, freed + b
            log.info("sent_retention", channel=channel.name, files_removed=files,
                     bytes_freed=freed, older_than_days=daemon.sent_retention_days,
                     duration_ms=int((time.monotonic() - started) * 1000))
    if daemon.journal_retention_days > 0:
        started = time.monotonic()
        days = max(daemon.journal_retention_days, daemon.duplicate_window_days)
        pruned = db.prune_finished(now - days * DAY)
        log.info("journal_retention", submissions_pruned=pruned.submissions,
                 events_pruned=pruned.events, replies_pruned=pruned.replies,
                 reply_sets_pruned=pruned.reply_sets, older_than_days=days,
                 duration_ms=int((time.monotonic() - started) * 1000))
