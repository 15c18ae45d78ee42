"""The journal's schema, as numbered migrations recorded in `PRAGMA user_version`.

A journal says which version of the schema it holds; opening it for writing runs the
migrations it lacks, each in its own transaction with the new version number, so a
crash half-way leaves a journal at a version it fully holds and the next open goes on
from there. Version 1 is the schema of flad's first release (journals of that release
say 0: they are taken as version 1 by the same `IF NOT EXISTS` statements that make
it). A journal newer than this code is refused: an older flad would read rows it does
not understand and could number or send again. A read-only open (`flad status`) never
migrates; it reads what an older schema holds.

To change the schema: append a `Migration` with the next number, never edit one that
shipped. The test of the previous release's journal (tests/test_journal_migrations.py)
holds that release's SQL as text.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class JournalTooNew(RuntimeError):
    """The journal was written by a newer flad; nothing was changed in it."""

    def __init__(self, path: Path, found: int) -> None:
        self.path = path
        self.found = found
        super().__init__(
            f"the journal {path} is at schema version {found}, and this flad knows versions "
            f"up to {LATEST}: a newer flad has upgraded it. Run that newer flad (or a later "
            "one), or restore the copy of the journal kept before the upgrade")


@dataclass(frozen=True)
class Migration:
    """One step of the schema: run inside a transaction that then sets `version`."""

    version: int
    summary: str
    apply: Callable[[sqlite3.Connection], None]


# -- version 1: the first release (commit fde4337) --------------------------------------

_V1 = (
    """CREATE TABLE IF NOT EXISTS submission (
        id            INTEGER PRIMARY KEY,
        channel       TEXT NOT NULL,
        application   TEXT NOT NULL,
        environment   TEXT NOT NULL,
        drop_name     TEXT NOT NULL,
        spool_path    TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        state         TEXT NOT NULL,
        received_at   REAL NOT NULL,
        updated_at    REAL NOT NULL,
        sender        TEXT,
        file_date     TEXT,
        sequence      TEXT,
        fi_name       TEXT,
        fs_name       TEXT,
        go_name       TEXT,
        upload_step   TEXT,
        sent_at       REAL,
        error         TEXT,
        rejected_path TEXT,
        force_send    INTEGER NOT NULL DEFAULT 0,
        reference_nbr TEXT,
        receipt_result INTEGER,
        receipt_error TEXT,
        receipt_name  TEXT,
        receipt_at    REAL,
        noti_result   INTEGER,
        anomalies_blocking INTEGER,
        anomalies_other INTEGER,
        anomalies     TEXT,
        noti_name     TEXT,
        notified_at   REAL
    )""",
    "CREATE INDEX IF NOT EXISTS submission_go ON submission (go_name)",
    "CREATE INDEX IF NOT EXISTS submission_ref ON submission (reference_nbr)",
    """CREATE TABLE IF NOT EXISTS reply_set (
        channel      TEXT NOT NULL,
        folder       TEXT NOT NULL,
        set_key      TEXT NOT NULL,
        files        TEXT NOT NULL,
        state        TEXT NOT NULL,
        submission_id INTEGER,
        delivered_at REAL NOT NULL,
        removed_at   REAL,
        PRIMARY KEY (channel, folder, set_key)
    )""",
    "CREATE INDEX IF NOT EXISTS submission_state ON submission (channel, state)",
    "CREATE INDEX IF NOT EXISTS submission_sha ON submission"
    " (channel, application, environment, sha256)",
    "CREATE UNIQUE INDEX IF NOT EXISTS submission_fi ON submission (fi_name)"
    " WHERE fi_name IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS sequence_counter (
        sender      TEXT NOT NULL,
        file_date   TEXT NOT NULL,
        environment TEXT NOT NULL,
        last_index  INTEGER NOT NULL,
        PRIMARY KEY (sender, file_date, environment)
    )""",
    """CREATE TABLE IF NOT EXISTS event (
        id            INTEGER PRIMARY KEY,
        submission_id INTEGER NOT NULL REFERENCES submission (id),
        at            REAL NOT NULL,
        state         TEXT NOT NULL,
        detail        TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS channel_state (
        channel      TEXT PRIMARY KEY,
        state        TEXT NOT NULL,
        error        TEXT,
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL,
        updated_at   REAL NOT NULL
    )""",
)


def _first_release(db: sqlite3.Connection) -> None:
    for statement in _V1:
        db.execute(statement)


# -- version 2: replies as the platform writes them -----------------------------------

#: Columns of `submission` added for the official ACRF / NOTIFICATION layouts.
_V2_COLUMNS = (
    ("receipt_errors", "TEXT"),  # JSON: every ErrorID of the receipt, with its label
    ("receipt_type_form", "TEXT"),  # TypeForm of the receipt: PA or FA
    ("noti_type_form", "TEXT"),  # TypeForm of the notification recorded
    ("noti_provisional", "INTEGER"),  # 1 while only a provisional notification came
    ("noti_forms", "TEXT"),  # JSON: one summary per form of the notification(s)
)

_V2_TABLES = (
    """CREATE TABLE IF NOT EXISTS sent_form (
        submission_id  INTEGER NOT NULL REFERENCES submission (id),
        form_index     INTEGER NOT NULL,
        identification TEXT NOT NULL,
        creation_date  TEXT NOT NULL,
        creation_hour  TEXT NOT NULL,
        declarant_ref  TEXT,
        PRIMARY KEY (submission_id, form_index)
    )""",
    "CREATE INDEX IF NOT EXISTS sent_form_header ON sent_form"
    " (identification, creation_date, creation_hour)",
    """CREATE TABLE IF NOT EXISTS reply (
        id            INTEGER PRIMARY KEY,
        channel       TEXT NOT NULL,
        folder        TEXT NOT NULL,
        set_key       TEXT NOT NULL,
        file_name     TEXT NOT NULL,
        form_index    INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        submission_id INTEGER,
        tied_by       TEXT,
        names         TEXT,
        summary       TEXT,
        at            REAL NOT NULL,
        UNIQUE (channel, folder, file_name, form_index)
    )""",
    "CREATE INDEX IF NOT EXISTS reply_unmatched ON reply (submission_id)",
)


def _replies_as_written(db: sqlite3.Connection) -> None:
    # A journal made by a development build between the two releases already has
    # some of these (it added them at every open, without a version): skip those.
    present = {str(r[1]) for r in db.execute("PRAGMA table_info(submission)")}
    for name, kind in _V2_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE submission ADD COLUMN {name} {kind}")
    for statement in _V2_TABLES:
        db.execute(statement)


# -- version 3: events found by submission --------------------------------------------

def _events_by_submission(db: sqlite3.Connection) -> None:
    # the metrics endpoint reads, for each new event, the state before it
    db.execute("CREATE INDEX IF NOT EXISTS event_submission ON event (submission_id, id)")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "first release: submissions, events, sequence counters, reply sets, "
                 "channel state", _first_release),
    Migration(2, "replies as the platform writes them: receipt and notification details, "
                 "sent forms, reply rows", _replies_as_written),
    Migration(3, "an index of the events by submission (the metrics read the state "
                 "before each event)", _events_by_submission),
)
#: The schema version this code reads and writes.
LATEST = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def refuse_if_newer(db: sqlite3.Connection, path: Path) -> int:
    """The journal's version; `JournalTooNew` if this code does not know it."""
    found = version(db)
    if found > LATEST:
        raise JournalTooNew(path, found)
    return found


def upgrade(db: sqlite3.Connection, path: Path, log: Any) -> None:
    """Run every migration the journal lacks, one transaction each, and log each step.

    `db` is a writer connection in autocommit mode. Two processes opening the same
    journal at once are safe: the version is read again inside each `BEGIN IMMEDIATE`,
    so the second finds the work done.
    """
    if refuse_if_newer(db, path) == LATEST:
        return
    while True:
        started = time.monotonic()
        db.execute("BEGIN IMMEDIATE")
        try:
            found = refuse_if_newer(db, path)
            if found == LATEST:
                db.execute("ROLLBACK")
                return
            step = MIGRATIONS[found]  # the migration to version found + 1
            step.apply(db)
            db.execute(f"PRAGMA user_version = {int(step.version)}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        log.info("journal_migrated", path=str(path), from_version=found,
                 to_version=step.version, change=step.summary,
                 duration_ms=int((time.monotonic() - started) * 1000))
