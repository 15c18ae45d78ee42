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

from flad import naming
from flad.config import Config
from flad.journal import Journal

#: How often the service applies retention.
EVERY_SECONDS = 24 * 3600.0
DAY = 86400.0


def clean_sent(folder: Path, before: float) -> tuple[int, int]:
    """Remove archived FI/FS files of `folder` last modified before `before`.

    Only regular files whose name is an FI or FS name of the grammar are touched: an
    archive folder is in the outbox, which other users may write. Returns (files,
    bytes) removed.
    """
    removed = freed = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0, 0
    for name in names:
        try:
            kind = naming.parse(name).type
        except naming.InvalidName:
            continue
        if kind not in ("FI", "FS"):
            continue
        path = folder / name
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= before:
                continue
            os.unlink(path)
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
            sent = channel.outbox / "sent"
            try:
                folders = [sent / e for e in sorted(os.listdir(sent))]
            except FileNotFoundError:
                folders = []
            files = freed = 0
            for folder in folders:
                if folder.is_dir() and not folder.is_symlink():
                    n, b = clean_sent(folder, before)
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
