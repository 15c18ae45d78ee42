"""Submissions: one row per claimed file, its numbering and every state it goes through.

Every state change goes through `_move`, which reads the submission's state inside the
writing transaction and asks the transition table (`flad.journal.states`) before it
writes; an event row records each change. Sequence numbers are allocated in the same
transaction as the state `prepared`, so a number the server may have seen is never
given twice.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from flad import naming
from flad.journal import states
from flad.journal.connection import Connections
from flad.journal.records import Naming, Prepared, Received, Submission
from flad.journal.states import State


class Submissions:
    """The `submission`, `event` and `sequence_counter` tables."""

    def __init__(self, conns: Connections, clock: Callable[[], float]) -> None:
        self._conns = conns
        self._clock = clock

    # -- the one place a state changes ------------------------------------------------

    def _event(self, db: sqlite3.Connection, sub_id: int, state: str,
               detail: str | None) -> None:
        db.execute("INSERT INTO event (submission_id, at, state, detail) VALUES (?,?,?,?)",
                   (sub_id, self._clock(), str(state), detail))

    def _move(self, db: sqlite3.Connection, sub_id: int, target: State,
              detail: str | None, fields: dict[str, Any]) -> None:
        """Move one submission to `target` inside the caller's transaction, or raise.

        `states.check` refuses (with `TransitionError`, a ValueError) any move the
        table does not list; the caller's transaction then rolls back whatever it
        wrote before, so a batch changes all or nothing.
        """
        row = db.execute("SELECT state FROM submission WHERE id = ?", (sub_id,)).fetchone()
        states.check(sub_id, str(row[0]) if row else None, target)
        values = {**fields, "state": str(target), "updated_at": self._clock()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        db.execute(f"UPDATE submission SET {assignments} WHERE id = ?",
                   (*values.values(), sub_id))
        self._event(db, sub_id, target, detail)

    def _move_many(self, sub_ids: Sequence[int], target: State, detail: str | None = None,
                   **fields: Any) -> None:
        """One state change for several submissions, all or none, in one transaction."""
        with self._conns.tx() as db:
            for sub_id in sub_ids:
                self._move(db, sub_id, target, detail, fields)

    # -- reads ----------------------------------------------------------------------

    def get(self, sub_id: int) -> Submission | None:
        with self._conns.reading() as db:
            row = db.execute("SELECT * FROM submission WHERE id = ?", (sub_id,)).fetchone()
        return Submission(**dict(row)) if row else None

    def get_many(self, sub_ids: Sequence[int]) -> list[Submission]:
        """The submissions still in the journal among `sub_ids`, in that order."""
        if not sub_ids:
            return []
        marks = ",".join("?" * len(sub_ids))
        with self._conns.reading() as db:
            rows = db.execute(f"SELECT * FROM submission WHERE id IN ({marks})",
                              tuple(sub_ids)).fetchall()
        found = {int(r["id"]): Submission(**dict(r)) for r in rows}
        return [found[i] for i in sub_ids if i in found]

    def by_spool_path(self, spool_path: str) -> Submission | None:
        """The latest submission taken under this spool path (a resend reuses none, but
        an old row may share it): never an arbitrary one of several."""
        with self._conns.reading() as db:
            row = db.execute("SELECT * FROM submission WHERE spool_path = ?"
                             " ORDER BY id DESC LIMIT 1", (spool_path,)).fetchone()
        return Submission(**dict(row)) if row else None

    def open_states(self, channel: str) -> list[tuple[int, str]]:
        """(id, state) of a channel's open submissions, oldest first: cheap to poll."""
        marks = ",".join("?" * len(states.OPEN_STATES))
        with self._conns.reading() as db:
            rows = db.execute(
                f"SELECT id, state FROM submission WHERE channel = ? AND state IN ({marks})"
                " ORDER BY id", (channel, *states.OPEN_STATES)).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def received_sizes(self, channel: str, limit: int) -> list[tuple[int, int]]:
        """(id, size) of the oldest submissions of a channel waiting to be checked."""
        with self._conns.reading() as db:
            rows = db.execute(
                "SELECT id, size FROM submission WHERE channel = ? AND state = ? ORDER BY id"
                " LIMIT ?", (channel, State.RECEIVED, int(limit))).fetchall()
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
        with self._conns.reading() as db:
            rows = db.execute(sql, args).fetchall()
        return [Submission(**dict(r)) for r in rows]

    def events(self, sub_id: int) -> list[tuple[float, str, str | None]]:
        with self._conns.reading() as db:
            rows = db.execute(
                "SELECT at, state, detail FROM event WHERE submission_id = ? ORDER BY id",
                (sub_id,)).fetchall()
        return [(r["at"], r["state"], r["detail"]) for r in rows]

    def sequences_used(self) -> list[tuple[str, str, str, str]]:
        """(sender, date, env letter, sequence) of every prepared submission."""
        with self._conns.reading() as db:
            rows = db.execute(
                "SELECT sender, file_date, fi_name, sequence FROM submission"
                " WHERE sequence IS NOT NULL").fetchall()
        return [(r[0], r[1], naming.parse(r[2]).environment, r[3]) for r in rows]

    def find_by_names(self, channel: str, *names: str) -> list[Submission]:
        """The submissions whose GO or FI carries one of these names (FI: part 1)."""
        if not names:
            return []
        marks = ",".join("?" * len(names))
        with self._conns.reading() as db:
            rows = db.execute(
                f"SELECT * FROM submission WHERE channel = ? AND (go_name IN ({marks})"
                f" OR fi_name IN ({marks})) ORDER BY id", (channel, *names, *names)).fetchall()
        return [Submission(**dict(r)) for r in rows]

    def find_by_reference(self, channel: str, reference: str) -> list[Submission]:
        """The submissions whose receipt gave this ticket (ReferenceNbr)."""
        with self._conns.reading() as db:
            rows = db.execute(
                "SELECT * FROM submission WHERE channel = ? AND reference_nbr = ? ORDER BY id",
                (channel, reference)).fetchall()
        return [Submission(**dict(r)) for r in rows]

    # -- the way forward ----------------------------------------------------------------

    def add_received_many(self, files: Sequence[Received]) -> list[int]:
        """Journal claimed files in one transaction (one WAL sync for a whole drop)."""
        now = self._clock()
        ids: list[int] = []
        with self._conns.tx() as db:
            for f in files:
                cur = db.execute(
                    "INSERT INTO submission (channel, application, environment, drop_name,"
                    " spool_path, sha256, size, state, received_at, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (f.channel, f.application, f.environment, f.drop_name, f.spool_path,
                     f.sha256, f.size, str(states.INITIAL), now, now))
                sub_id = int(cur.lastrowid or 0)
                self._event(db, sub_id, states.INITIAL, f.drop_name)
                ids.append(sub_id)
        return ids

    def prepare_many(self, requests: Sequence[Naming], *,
                     duplicate_window_days: int) -> list[Prepared]:
        """Number and name several submissions in one transaction, refusing duplicates.

        The duplicate check runs inside the same transaction as the numbering, so two
        copies of one content checked side by side cannot both be given a name: the
        second finds the first, already `prepared`. A submission marked `force_send`
        (put back by `flad resend`) skips the check. The number is taken even if the
        submission fails later: a number the server may have seen is never used again.
        """
        outcomes: list[Prepared] = []
        since = self._clock() - duplicate_window_days * 86400
        marks = ",".join("?" * len(states.SENT_STATES))
        with self._conns.tx() as db:
            for r in requests:
                row = db.execute("SELECT * FROM submission WHERE id = ?",
                                 (r.sub_id,)).fetchone()
                states.check(r.sub_id, str(row["state"]) if row else None, State.PREPARED)
                assert row is not None  # else refused just above
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
                         row["sha256"], r.sub_id, *states.SENT_STATES, since)).fetchone()
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
                fields = {"sender": r.sender, "file_date": r.file_date, "sequence": sequence,
                          "fi_name": names.fi[0], "fs_name": names.fs[0] if r.signed else None,
                          "go_name": names.go, "error": None}
                self._move(db, r.sub_id, State.PREPARED, names.fi[0], fields)
                fresh = db.execute("SELECT * FROM submission WHERE id = ?",
                                   (r.sub_id,)).fetchone()
                outcomes.append(Prepared(Submission(**dict(row)), Submission(**dict(fresh)),
                                         None))
        return outcomes

    def mark_uploading_many(self, sub_ids: Sequence[int], step: str) -> None:
        """Record the upload step about to start (data: FI and FS; go) before it starts."""
        self._move_many(sub_ids, State.UPLOADING, step, upload_step=step)

    def mark_sent_many(self, sub_ids: Sequence[int]) -> None:
        self._move_many(sub_ids, State.SENT, None, sent_at=self._clock(), error=None,
                        upload_step="done")

    def mark_rejected(self, sub_id: int, reason: str, rejected_path: str) -> None:
        """Refused by the check (or as a duplicate) while waiting to be prepared."""
        self._move_many((sub_id,), State.REJECTED, reason, error=reason,
                        rejected_path=rejected_path)

    def mark_failed(self, sub_id: int, reason: str) -> bool:
        """Fail an open submission; False (and nothing changed) if it is no longer open.

        A submission already sent (or refused, or failed) keeps its state: an error met
        after its GO must not make `flad resend` send it again.
        """
        try:
            self._move_many((sub_id,), State.FAILED, reason, error=reason)
        except states.TransitionError:
            return False
        return True

    def note_error(self, sub_id: int, error: str | None) -> None:
        """Last transient error of an open submission (shown by `flad status`)."""
        with self._conns.tx() as db:
            db.execute("UPDATE submission SET error = ?, updated_at = ? WHERE id = ?",
                       (error, self._clock(), sub_id))

    def requeue(self, sub_id: int, spool_path: str, *, force: bool) -> None:
        """Put a refused or failed submission back in line (`flad resend`)."""
        self._move_many((sub_id,), State.RECEIVED, "resend", spool_path=spool_path,
                        force_send=int(force), error=None, rejected_path=None,
                        sequence=None, fi_name=None, fs_name=None, go_name=None,
                        upload_step=None)

    # -- the platform's answers ---------------------------------------------------------

    def record_receipt(self, sub_id: int, *, accepted: bool, errors: Sequence[dict[str, Any]],
                       reference: str | None, receipt_name: str, type_form: str | None,
                       detail: str | None) -> None:
        """A receipt's verdict, whichever TypeForm (PA or FA) it carries.

        Read and written in one transaction. The verdict moves the submission to
        `acknowledged` or `refused` where the table allows it; elsewhere (a late receipt
        of a notified submission, one tied to a submission not sent) it is recorded and
        the state stays, as the event says.
        """
        codes = " ".join(str(e["error_id"]) for e in errors) or None
        fields: dict[str, Any] = {
            "receipt_result": int(accepted), "receipt_error": codes,
            "receipt_errors": json.dumps(list(errors)), "receipt_type_form": type_form,
            "receipt_name": receipt_name, "receipt_at": self._clock()}
        if reference:
            fields["reference_nbr"] = reference
        if not accepted:
            fields["error"] = detail or codes
        target = State.ACKNOWLEDGED if accepted else State.REFUSED
        with self._conns.tx() as db:
            self._answer(db, sub_id, target, detail or codes, fields)

    def record_notification(self, sub_id: int, *, result: int | None, blocking: int,
                            other: int, anomalies: Sequence[dict[str, Any]],
                            noti_name: str, type_form: str | None = None,
                            provisional: bool = False,
                            forms: Sequence[dict[str, Any]] = ()) -> bool:
        """A notification; False when it was provisional and a final one is already there.

        A final notification makes the submission `notified`, whatever its result. A
        provisional one (PA, or result 3) is recorded and shown but leaves the state
        as it is: the wait for the final answer goes on. Read and written in one
        transaction.
        """
        detail = (f"{'provisional: ' if provisional else ''}result {result}, {blocking} "
                  f"blocking, {other} other anomalies")
        fields: dict[str, Any] = {
            "noti_result": result, "anomalies_blocking": blocking, "anomalies_other": other,
            "anomalies": json.dumps(list(anomalies)), "noti_name": noti_name,
            "notified_at": self._clock(), "noti_type_form": type_form,
            "noti_provisional": int(provisional), "noti_forms": json.dumps(list(forms))}
        with self._conns.tx() as db:
            row = db.execute("SELECT state, notified_at, noti_provisional FROM submission"
                             " WHERE id = ?", (sub_id,)).fetchone()
            if row is None:
                return False
            if provisional and row["notified_at"] is not None and not row["noti_provisional"]:
                self._event(db, sub_id, row["state"], f"late {detail} ({noti_name})")
                return False
            self._answer(db, sub_id, None if provisional else State.NOTIFIED, detail, fields)
        return True

    def _answer(self, db: sqlite3.Connection, sub_id: int, target: State | None,
                detail: str | None, fields: dict[str, Any]) -> None:
        """Record a reply's fields; move to `target` if given and the table allows it."""
        row = db.execute("SELECT state FROM submission WHERE id = ?", (sub_id,)).fetchone()
        if row is None:
            return
        current = str(row[0])
        if target is not None and states.allowed(current, target):
            self._move(db, sub_id, target, detail, fields)
            return
        if target is not None:
            detail = f"{detail or target}; stays {current} (cannot become {target})"
        values = {**fields, "updated_at": self._clock()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        db.execute(f"UPDATE submission SET {assignments} WHERE id = ?",
                   (*values.values(), sub_id))
        self._event(db, sub_id, current, detail)


def _date(yyyymmdd: str) -> datetime.date:
    return datetime.datetime.strptime(yyyymmdd, "%Y%m%d").date()
