"""The journal: flad's single source of truth, in SQLite.

Every state change is written after the effect it records is durable, in a short
transaction, so that a crash at any instant followed by a restart resumes each
submission from the last step that surely happened. WAL mode and a busy timeout let
`flad status` read while the service writes. All SQL lives here.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flad import naming

RECEIVED = "received"
REJECTED = "rejected"
PREPARED = "prepared"
UPLOADING = "uploading"
SENT = "sent"
FAILED = "failed"
ACKNOWLEDGED = "acknowledged"  # positive receipt (ACRF ResultCode 1)
REFUSED = "refused"  # negative receipt: the platform will not process it
NOTIFIED = "notified"  # the application's notification arrived
STATES = (RECEIVED, REJECTED, PREPARED, UPLOADING, SENT, FAILED, ACKNOWLEDGED, REFUSED,
          NOTIFIED)
#: Submissions a channel worker still has to move forward.
OPEN_STATES = (RECEIVED, PREPARED, UPLOADING)
#: Content that reached (or may have reached) the platform: the duplicate check looks here.
SENT_STATES = (PREPARED, UPLOADING, SENT, ACKNOWLEDGED, NOTIFIED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submission (
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
);
CREATE INDEX IF NOT EXISTS submission_go ON submission (go_name);
CREATE INDEX IF NOT EXISTS submission_ref ON submission (reference_nbr);
CREATE TABLE IF NOT EXISTS reply_set (
    channel      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    set_key      TEXT NOT NULL,
    files        TEXT NOT NULL,
    state        TEXT NOT NULL,
    submission_id INTEGER,
    delivered_at REAL NOT NULL,
    removed_at   REAL,
    PRIMARY KEY (channel, folder, set_key)
);
CREATE INDEX IF NOT EXISTS submission_state ON submission (channel, state);
CREATE INDEX IF NOT EXISTS submission_sha ON submission (channel, application, environment, sha256);
CREATE UNIQUE INDEX IF NOT EXISTS submission_fi ON submission (fi_name) WHERE fi_name IS NOT NULL;
CREATE TABLE IF NOT EXISTS sequence_counter (
    sender      TEXT NOT NULL,
    file_date   TEXT NOT NULL,
    environment TEXT NOT NULL,
    last_index  INTEGER NOT NULL,
    PRIMARY KEY (sender, file_date, environment)
);
CREATE TABLE IF NOT EXISTS event (
    id            INTEGER PRIMARY KEY,
    submission_id INTEGER NOT NULL REFERENCES submission (id),
    at            REAL NOT NULL,
    state         TEXT NOT NULL,
    detail        TEXT
);
CREATE TABLE IF NOT EXISTS sent_form (
    submission_id  INTEGER NOT NULL REFERENCES submission (id),
    form_index     INTEGER NOT NULL,
    identification TEXT NOT NULL,
    creation_date  TEXT NOT NULL,
    creation_hour  TEXT NOT NULL,
    declarant_ref  TEXT,
    PRIMARY KEY (submission_id, form_index)
);
CREATE INDEX IF NOT EXISTS sent_form_header ON sent_form
    (identification, creation_date, creation_hour);
CREATE TABLE IF NOT EXISTS reply (
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
);
CREATE INDEX IF NOT EXISTS reply_unmatched ON reply (submission_id);
CREATE TABLE IF NOT EXISTS channel_state (
    channel      TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    error        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL,
    updated_at   REAL NOT NULL
);
"""


#: Columns added to `submission` after its first release: an older journal gets them
#: at open (ALTER TABLE ... ADD COLUMN), so a journal of any earlier version still opens.
_ADDED_COLUMNS = (
    ("receipt_errors", "TEXT"),  # JSON: every ErrorID of the receipt, with its label
    ("receipt_type_form", "TEXT"),  # TypeForm of the receipt: PA or FA
    ("noti_type_form", "TEXT"),  # TypeForm of the notification recorded
    ("noti_provisional", "INTEGER"),  # 1 while only a provisional notification came
    ("noti_forms", "TEXT"),  # JSON: one summary per form of the notification(s)
)


def _migrate(db: sqlite3.Connection) -> None:
    present = {str(r[1]) for r in db.execute("PRAGMA table_info(submission)")}
    for name, kind in _ADDED_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE submission ADD COLUMN {name} {kind}")


@dataclass(frozen=True)
class SentFormRow:
    """The header of one form of a sent file (see flad.sentforms)."""

    identification: str
    creation_date: str
    creation_hour: str
    declarant_reference: str | None = None


@dataclass(frozen=True)
class Submission:
    id: int
    channel: str
    application: str
    environment: str
    drop_name: str
    spool_path: str
    sha256: str
    size: int
    state: str
    received_at: float
    updated_at: float
    sender: str | None
    file_date: str | None
    sequence: str | None
    fi_name: str | None
    fs_name: str | None
    go_name: str | None
    upload_step: str | None
    sent_at: float | None
    error: str | None
    rejected_path: str | None
    force_send: int
    reference_nbr: str | None = None
    receipt_result: int | None = None
    receipt_error: str | None = None
    receipt_name: str | None = None
    receipt_at: float | None = None
    noti_result: int | None = None
    anomalies_blocking: int | None = None
    anomalies_other: int | None = None
    anomalies: str | None = None
    noti_name: str | None = None
    notified_at: float | None = None
    receipt_errors: str | None = None
    receipt_type_form: str | None = None
    noti_type_form: str | None = None
    noti_provisional: int | None = None
    noti_forms: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Received:
    """A claimed file, as the journal first records it."""

    channel: str
    application: str
    environment: str
    drop_name: str
    spool_path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Naming:
    """What numbering one submission needs."""

    sub_id: int
    sender: str
    file_date: str
    environment_letter: str
    application_code: str
    signed: bool
    parts: int = 1
    #: the content's sha256, when the claim left it to the check ("" otherwise)
    sha256: str = ""


@dataclass(frozen=True)
class Prepared:
    """The outcome of numbering one submission: named, or a duplicate of `earlier`."""

    before: Submission
    prepared: Submission | None
    earlier: Submission | None


@dataclass(frozen=True)
class ChannelState:
    channel: str
    state: str
    error: str | None
    attempts: int
    next_attempt: float | None
    updated_at: float


class Journal:
    """One SQLite database; safe to share between the threads of one process."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 readonly: bool = False) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10,
                                       check_same_thread=False, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    _migrate(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.row_factory = sqlite3.Row
        # Reads go through their own connection: with WAL they never wait for a
        # writer's commit (and its sync), so checks and `status` run beside uploads.
        self._reader = self._db
        if not readonly:
            self._reader = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                           isolation_level=None)
            self._reader.execute("PRAGMA busy_timeout=10000")
            self._reader.row_factory = sqlite3.Row
        self._read_lock = threading.Lock()

    def close(self) -> None:
        with self._lock, self._read_lock:
            if self._reader is not self._db:
                self._reader.close()
            self._db.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            yield self._reader

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _event(self, db: sqlite3.Connection, sub_id: int, state: str,
               detail: str | None) -> None:
        db.execute("INSERT INTO event (submission_id, at, state, detail) VALUES (?,?,?,?)",
                   (sub_id, self._clock(), state, detail))

    # -- submissions ---------------------------------------------------------------

    def add_received(self, *, channel: str, application: str, environment: str,
                     drop_name: str, spool_path: str, sha256: str, size: int) -> int:
        return self.add_received_many([Received(channel, application, environment,
                                                drop_name, spool_path, sha256, size)])[0]

    def add_received_many(self, files: Sequence[Received]) -> list[int]:
        """Journal claimed files in one transaction (one WAL sync for a whole drop)."""
        now = self._clock()
        ids: list[int] = []
        with self._tx() as db:
            for f in files:
                cur = db.execute(
                    "INSERT INTO submission (channel, application, environment, drop_name,"
                    " spool_path, sha256, size, state, received_at, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (f.channel, f.application, f.environment, f.drop_name, f.spool_path,
                     f.sha256, f.size, RECEIVED, now, now))
                sub_id = int(cur.lastrowid or 0)
                self._event(db, sub_id, RECEIVED, f.drop_name)
                ids.append(sub_id)
        return ids

    def get(self, sub_id: int) -> Submission | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM submission WHERE id = ?",
                                   (sub_id,)).fetchone()
        return Submission(**dict(row)) if row else None

    def get_many(self, sub_ids: Sequence[int]) -> list[Submission]:
        """The submissions still in the journal among `sub_ids`, in that order."""
        if not sub_ids:
            return []
        marks = ",".join("?" * len(sub_ids))
        with self._reading() as db:
            rows = db.execute(f"SELECT * FROM submission WHERE id IN ({marks})",
                                    tuple(sub_ids)).fetchall()
        found = {int(r["id"]): Submission(**dict(r)) for r in rows}
        return [found[i] for i in sub_ids if i in found]

    def by_spool_path(self, spool_path: str) -> Submission | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM submission WHERE spool_path = ?",
                                   (spool_path,)).fetchone()
        return Submission(**dict(row)) if row else None

    def open_states(self, channel: str) -> list[tuple[int, str]]:
        """(id, state) of a channel's open submissions, oldest first: cheap to poll."""
        marks = ",".join("?" * len(OPEN_STATES))
        with self._reading() as db:
            rows = db.execute(
                f"SELECT id, state FROM submission WHERE channel = ? AND state IN ({marks})"
                " ORDER BY id", (channel, *OPEN_STATES)).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def received_sizes(self, channel: str, limit: int) -> list[tuple[int, int]]:
        """(id, size) of the oldest submissions of a channel waiting to be checked."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, size FROM submission WHERE channel = ? AND state = ? ORDER BY id"
                " LIMIT ?", (channel, RECEIVED, int(limit))).fetchall()
        return [(int(r[0]), int(r[1])) for r in rows]

    def submissions(self, *, channel: str | None = None, states: Sequence[str] = (),
             since: float | None = None, limit: int | None = None) -> list[Submission]:
        where: list[str] = ["1=1"]
        args: list[object] = []
        if channel:
            where.append("channel = ?")
            args.append(channel)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if since is not None:
            where.append("updated_at >= ?")
            args.append(since)
        sql = f"SELECT * FROM submission WHERE {' AND '.join(where)} ORDER BY id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._reading() as db:
            rows = db.execute(sql, args).fetchall()
        return [Submission(**dict(r)) for r in rows]

    def _set(self, sub_id: int, state: str, detail: str | None = None,
             expect: Sequence[str] = (), **fields: Any) -> None:
        self._set_many((sub_id,), state, detail, expect, **fields)

    def _set_many(self, sub_ids: Sequence[int], state: str, detail: str | None = None,
                  expect: Sequence[str] = (), **fields: Any) -> None:
        """One state change for several submissions, all or none, in one transaction."""
        fields["state"] = state
        fields["updated_at"] = self._clock()
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            for sub_id in sub_ids:
                if expect:
                    row = db.execute("SELECT state FROM submission WHERE id = ?",
                                     (sub_id,)).fetchone()
                    if row is None or row["state"] not in expect:
                        current = row["state"] if row else "absent"
                        raise ValueError(f"submission {sub_id} is {current}, expected one "
                                         f"of {', '.join(expect)}")
                db.execute(f"UPDATE submission SET {assignments} WHERE id = ?",
                           (*fields.values(), sub_id))
                self._event(db, sub_id, state, detail)

    def mark_rejected(self, sub_id: int, reason: str, rejected_path: str) -> None:
        self._set(sub_id, REJECTED, reason, error=reason, rejected_path=rejected_path)

    def mark_failed(self, sub_id: int, reason: str) -> bool:
        """Fail an open submission; False (and nothing changed) if it is no longer open.

        A submission already sent (or refused, or failed) keeps its state: an error met
        after its GO must not make `flad resend` send it again.
        """
        try:
            self._set(sub_id, FAILED, reason, expect=OPEN_STATES, error=reason)
        except ValueError:
            return False
        return True

    def note_error(self, sub_id: int, error: str | None) -> None:
        """Last transient error of an open submission (shown by `flad status`)."""
        with self._tx() as db:
            db.execute("UPDATE submission SET error = ?, updated_at = ? WHERE id = ?",
                       (error, self._clock(), sub_id))

    def prepare(self, sub_id: int, *, sender: str, file_date: str, environment_letter: str,
                application_code: str, parts: int = 1,
                signed: bool) -> Submission:
        """Allocate the sequence number and names in one transaction.

        The number is taken even if the submission fails later: a number the server may
        have seen is never used again.
        """
        request = Naming(sub_id, sender, file_date, environment_letter, application_code,
                         signed, parts)
        outcome = self.prepare_many([request], duplicate_window_days=0)[0]
        assert outcome.prepared is not None
        return outcome.prepared

    def prepare_many(self, requests: Sequence[Naming], *,
                     duplicate_window_days: int) -> list[Prepared]:
        """`prepare` for several submissions in one transaction, refusing duplicates.

        The duplicate check runs inside the same transaction as the numbering, so two
        copies of one content checked side by side cannot both be given a name: the
        second finds the first, already `prepared`. A submission marked `force_send`
        (put back by `flad resend`) skips the check.
        """
        outcomes: list[Prepared] = []
        since = self._clock() - duplicate_window_days * 86400
        marks = ",".join("?" * len(SENT_STATES))
        with self._tx() as db:
            for r in requests:
                row = db.execute("SELECT * FROM submission WHERE id = ?",
                                 (r.sub_id,)).fetchone()
                if row is None or row["state"] != RECEIVED:
                    raise ValueError(f"submission {r.sub_id} is not waiting to be prepared")
                if r.sha256 and not row["sha256"]:  # hashed by the check: journal it first
                    db.execute("UPDATE submission SET sha256 = ? WHERE id = ?",
                               (r.sha256, r.sub_id))
                    row = {**dict(row), "sha256": r.sha256}
                if duplicate_window_days > 0 and row["sha256"] and not row["force_send"]:
                    earlier = db.execute(
                        "SELECT * FROM submission WHERE channel = ? AND application = ?"
                        " AND environment = ? AND sha256 = ? AND id != ?"
                        f" AND state IN ({marks}) AND received_at >= ? ORDER BY id LIMIT 1",
                        (row["channel"], row["application"], row["environment"],
                         row["sha256"], r.sub_id, *SENT_STATES, since)).fetchone()
                    if earlier is not None:
                        outcomes.append(Prepared(Submission(**dict(row)), None,
                                                 Submission(**dict(earlier))))
                        continue
                counter = db.execute(
                    "INSERT INTO sequence_counter (sender, file_date, environment,"
                    " last_index) VALUES (?, ?, ?, 1) ON CONFLICT (sender, file_date,"
                    " environment) DO UPDATE SET last_index = last_index + 1"
                    " RETURNING last_index",
                    (r.sender, r.file_date, r.environment_letter)).fetchone()
                sequence = naming.sequence_for(int(counter[0]))
                names = naming.submission_names(
                    r.application_code, r.sender, _date(r.file_date), sequence,
                    r.environment_letter, r.parts)
                fs_name = names.fs[0] if r.signed else None
                now = self._clock()
                db.execute(
                    "UPDATE submission SET state = ?, sender = ?, file_date = ?,"
                    " sequence = ?, fi_name = ?, fs_name = ?, go_name = ?, updated_at = ?,"
                    " error = NULL WHERE id = ?",
                    (PREPARED, r.sender, r.file_date, sequence, names.fi[0], fs_name,
                     names.go, now, r.sub_id))
                self._event(db, r.sub_id, PREPARED, names.fi[0])
                fresh = dict(row)
                fresh.update(state=PREPARED, sender=r.sender, file_date=r.file_date,
                             sequence=sequence, fi_name=names.fi[0], fs_name=fs_name,
                             go_name=names.go, updated_at=now, error=None)
                outcomes.append(Prepared(Submission(**dict(row)), Submission(**fresh), None))
        return outcomes

    def mark_uploading(self, sub_id: int, step: str) -> None:
        """Record the upload step about to start (data: FI and FS; go) before it starts."""
        self.mark_uploading_many((sub_id,), step)

    def mark_uploading_many(self, sub_ids: Sequence[int], step: str) -> None:
        self._set_many(sub_ids, UPLOADING, step, expect=(PREPARED, UPLOADING),
                       upload_step=step)

    def mark_sent(self, sub_id: int) -> None:
        self.mark_sent_many((sub_id,))

    def mark_sent_many(self, sub_ids: Sequence[int]) -> None:
        self._set_many(sub_ids, SENT, None, expect=(UPLOADING,), sent_at=self._clock(),
                       error=None, upload_step="done")

    def requeue(self, sub_id: int, spool_path: str, *, force: bool) -> None:
        """Put a refused or failed submission back in line (`flad resend`)."""
        self._set(sub_id, RECEIVED, "resend", expect=(REJECTED, FAILED),
                  spool_path=spool_path, force_send=int(force), error=None,
                  rejected_path=None, sequence=None, fi_name=None, fs_name=None,
                  go_name=None, upload_step=None)

    def events(self, sub_id: int) -> list[tuple[float, str, str | None]]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT at, state, detail FROM event WHERE submission_id = ? ORDER BY id",
                (sub_id,)).fetchall()
        return [(r["at"], r["state"], r["detail"]) for r in rows]

    def sequences_used(self) -> list[tuple[str, str, str, str]]:
        """(sender, date, env letter, sequence) of every prepared submission."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT sender, file_date, fi_name, sequence FROM submission"
                " WHERE sequence IS NOT NULL").fetchall()
        return [(r[0], r[1], naming.parse(r[2]).environment, r[3]) for r in rows]

    # -- replies -------------------------------------------------------------------

    def reply_set_state(self, channel: str, folder: str, set_key: str) -> str | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT state FROM reply_set WHERE channel = ? AND folder = ? AND set_key = ?",
                (channel, folder, set_key)).fetchone()
        return str(row[0]) if row else None

    def record_reply_set(self, channel: str, folder: str, set_key: str,
                         files: Sequence[str], state: str) -> None:
        """`delivering` before the first file enters the inbox, `delivered` after the last."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO reply_set (channel, folder, set_key, files, state, delivered_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (channel, folder, set_key) DO UPDATE SET"
                " files = excluded.files, state = excluded.state,"
                " delivered_at = excluded.delivered_at",
                (channel, folder, set_key, json.dumps(list(files)), state, self._clock()))

    def record_reply_removed(self, channel: str, folder: str, set_key: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE reply_set SET state = 'removed', removed_at = ? WHERE"
                       " channel = ? AND folder = ? AND set_key = ?",
                       (self._clock(), channel, folder, set_key))

    def reply_sets(self) -> list[dict[str, Any]]:
        with self._reading() as db:
            rows = db.execute("SELECT * FROM reply_set ORDER BY delivered_at").fetchall()
        return [dict(r) for r in rows]

    def find_sent(self, channel: str, file_name: str) -> Submission | None:
        """The submission whose GO or FI (any part) carries this name."""
        found = self.find_by_names(channel, file_name)
        return found[0] if found else None

    def find_by_names(self, channel: str, *names: str) -> list[Submission]:
        """The submissions whose GO or FI carries one of these names (FI: part 1)."""
        if not names:
            return []
        marks = ",".join("?" * len(names))
        with self._reading() as db:
            rows = db.execute(
                f"SELECT * FROM submission WHERE channel = ? AND (go_name IN ({marks})"
                f" OR fi_name IN ({marks})) ORDER BY id", (channel, *names, *names)).fetchall()
        return [Submission(**dict(r)) for r in rows]

    def find_by_reference(self, channel: str, reference: str) -> list[Submission]:
        """The submissions whose receipt gave this ticket (ReferenceNbr)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM submission WHERE channel = ? AND reference_nbr = ? ORDER BY id",
                (channel, reference)).fetchall()
        return [Submission(**dict(r)) for r in rows]

    def record_sent_forms(self, sub_id: int, forms: Sequence[SentFormRow]) -> None:
        """The form headers of a checked file (replacing those of an earlier check)."""
        with self._tx() as db:
            db.execute("DELETE FROM sent_form WHERE submission_id = ?", (sub_id,))
            db.executemany(
                "INSERT INTO sent_form (submission_id, form_index, identification,"
                " creation_date, creation_hour, declarant_ref) VALUES (?,?,?,?,?,?)",
                [(sub_id, i, f.identification, f.creation_date, f.creation_hour,
                  f.declarant_reference) for i, f in enumerate(forms, start=1)])

    def sent_forms(self, sub_id: int) -> list[SentFormRow]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT identification, creation_date, creation_hour, declarant_ref FROM"
                " sent_form WHERE submission_id = ? ORDER BY form_index", (sub_id,)).fetchall()
        return [SentFormRow(r[0], r[1], r[2], r[3]) for r in rows]

    def find_by_form(self, channel: str, form: SentFormRow) -> list[Submission]:
        """Sent submissions holding a form with this header (and declarant reference, if given)."""
        marks = ",".join("?" * len((*SENT_STATES, REFUSED)))
        sql = ("SELECT DISTINCT s.* FROM submission s JOIN sent_form f ON f.submission_id = s.id"
               " WHERE s.channel = ? AND f.identification = ? AND f.creation_date = ?"
               f" AND f.creation_hour = ? AND s.state IN ({marks})")
        args: list[object] = [channel, form.identification, form.creation_date,
                              form.creation_hour, *SENT_STATES, REFUSED]
        if form.declarant_reference:
            sql += " AND f.declarant_ref = ?"
            args.append(form.declarant_reference)
        with self._reading() as db:
            rows = db.execute(sql + " ORDER BY s.id", args).fetchall()
        return [Submission(**dict(r)) for r in rows]

    def record_receipt(self, sub_id: int, *, accepted: bool, errors: Sequence[dict[str, Any]],
                       reference: str | None, receipt_name: str, type_form: str | None,
                       detail: str | None) -> None:
        """A receipt's verdict, whichever TypeForm (PA or FA) it carries."""
        state = ACKNOWLEDGED if accepted else REFUSED
        codes = " ".join(str(e["error_id"]) for e in errors) or None
        fields: dict[str, Any] = {
            "receipt_result": int(accepted), "receipt_error": codes,
            "receipt_errors": json.dumps(list(errors)), "receipt_type_form": type_form,
            "receipt_name": receipt_name, "receipt_at": self._clock()}
        if reference:
            fields["reference_nbr"] = reference
        current = self.get(sub_id)
        if current is not None and current.state == NOTIFIED:
            state = NOTIFIED  # a late receipt never moves a notified submission back
        if not accepted:
            fields["error"] = detail or codes
        self._set(sub_id, state, detail or codes, **fields)

    def record_notification(self, sub_id: int, *, result: int | None, blocking: int,
                            other: int, anomalies: Sequence[dict[str, Any]],
                            noti_name: str, type_form: str | None = None,
                            provisional: bool = False,
                            forms: Sequence[dict[str, Any]] = ()) -> bool:
        """A notification; False when it was provisional and a final one is already there.

        A final notification makes the submission `notified`, whatever its result. A
        provisional one (PA, or result 3) is recorded and shown but leaves the state
        as it is: the wait for the final answer goes on.
        """
        current = self.get(sub_id)
        if current is None:
            return False
        detail = (f"{'provisional: ' if provisional else ''}result {result}, {blocking} "
                  f"blocking, {other} other anomalies")
        if provisional and current.notified_at is not None and not current.noti_provisional:
            with self._tx() as db:
                self._event(db, sub_id, current.state, f"late {detail} ({noti_name})")
            return False
        self._set(sub_id, current.state if provisional else NOTIFIED, detail,
                  noti_result=result, anomalies_blocking=blocking, anomalies_other=other,
                  anomalies=json.dumps(list(anomalies)), noti_name=noti_name,
                  notified_at=self._clock(), noti_type_form=type_form,
                  noti_provisional=int(provisional), noti_forms=json.dumps(list(forms)))
        return True

    def record_reply(self, *, channel: str, folder: str, set_key: str, file_name: str,
                     form_index: int, kind: str, submission_id: int | None,
                     tied_by: str | None, names: dict[str, Any], summary: str) -> None:
        """One reply file (form_index 0) or one form of it, tied or not (idempotent)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO reply (channel, folder, set_key, file_name, form_index, kind,"
                " submission_id, tied_by, names, summary, at) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (channel, folder, file_name, form_index) DO UPDATE SET"
                " kind = excluded.kind, submission_id = excluded.submission_id,"
                " tied_by = excluded.tied_by, names = excluded.names,"
                " summary = excluded.summary",
                (channel, folder, set_key, file_name, form_index, kind, submission_id,
                 tied_by, json.dumps(names, sort_keys=True), summary, self._clock()))

    def replies(self, *, unmatched_only: bool = False,
                channel: str | None = None) -> list[dict[str, Any]]:
        """Recorded replies, oldest first; [] from a journal older than that record."""
        sql = "SELECT * FROM reply WHERE 1=1"
        args: list[object] = []
        if unmatched_only:
            sql += " AND submission_id IS NULL"
        if channel:
            sql += " AND channel = ?"
            args.append(channel)
        try:
            with self._reading() as db:
                rows = db.execute(sql + " ORDER BY id", args).fetchall()
        except sqlite3.OperationalError:
            return []  # a journal of an older flad, opened read-only
        found = []
        for r in rows:
            row = dict(r)
            row["names"] = json.loads(row["names"]) if row["names"] else {}
            found.append(row)
        return found

    # -- channels ------------------------------------------------------------------

    def set_channel_state(self, channel: str, state: str, *, error: str | None = None,
                          attempts: int = 0, next_attempt: float | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO channel_state (channel, state, error, attempts, next_attempt,"
                " updated_at) VALUES (?,?,?,?,?,?) ON CONFLICT (channel) DO UPDATE SET"
                " state = excluded.state, error = excluded.error,"
                " attempts = excluded.attempts, next_attempt = excluded.next_attempt,"
                " updated_at = excluded.updated_at",
                (channel, state, error, attempts, next_attempt, self._clock()))

    def channel_states(self) -> list[ChannelState]:
        with self._reading() as db:
            rows = db.execute("SELECT * FROM channel_state ORDER BY channel").fetchall()
        return [ChannelState(**dict(r)) for r in rows]


def _date(yyyymmdd: str) -> datetime.date:
    return datetime.datetime.strptime(yyyymmdd, "%Y%m%d").date()


def dumps(subs: Sequence[Submission]) -> str:
    return json.dumps([s.as_dict() for s in subs], indent=2, sort_keys=True)
