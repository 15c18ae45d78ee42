"""What came back from the platform, and what was sent that a reply may name.

Reply sets: one row per set of files (FO/FS/GO, CO) taken from OUT/OUTTEST, whose
state (`delivering`, `delivered`, `removed`) makes delivery into the inbox happen once
across crashes. Reply rows: one per reply file or form, tied to a submission or not
(`flad status --unmatched`). Sent forms: the headers of the forms of each checked file,
by which a notification without a file reference is tied back.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flad.journal import states
from flad.journal.connection import Connections
from flad.journal.records import SentFormRow, Submission


class ReplySets:
    """The `reply_set`, `reply` and `sent_form` tables."""

    def __init__(self, conns: Connections, clock: Callable[[], float]) -> None:
        self._conns = conns
        self._clock = clock

    def reply_set_state(self, channel: str, folder: str, set_key: str) -> str | None:
        with self._conns.reading() as db:
            row = db.execute(
                "SELECT state FROM reply_set WHERE channel = ? AND folder = ? AND set_key = ?",
                (channel, folder, set_key)).fetchone()
        return str(row[0]) if row else None

    def record_reply_set(self, channel: str, folder: str, set_key: str,
                         files: Sequence[str], state: str) -> None:
        """`delivering` before the first file enters the inbox, `delivered` after the last."""
        with self._conns.tx() as db:
            db.execute(
                "INSERT INTO reply_set (channel, folder, set_key, files, state, delivered_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (channel, folder, set_key) DO UPDATE SET"
                " files = excluded.files, state = excluded.state,"
                " delivered_at = excluded.delivered_at",
                (channel, folder, set_key, json.dumps(list(files)), state, self._clock()))

    def record_reply_removed(self, channel: str, folder: str, set_key: str) -> None:
        with self._conns.tx() as db:
            db.execute("UPDATE reply_set SET state = 'removed', removed_at = ? WHERE"
                       " channel = ? AND folder = ? AND set_key = ?",
                       (self._clock(), channel, folder, set_key))

    def set_replies_held(self, channel: str, folder: str,
                         held: Mapping[str, tuple[str, str, int]]) -> None:
        """The sets of one folder the bounds leave on the server now, by set key:
        (reason, detail, size). Sets no longer held lose their row; `since` stays."""
        with self._conns.tx() as db:
            known = {str(r[0]) for r in db.execute(
                "SELECT set_key FROM reply_held WHERE channel = ? AND folder = ?",
                (channel, folder))}
            for set_key in known - set(held):
                db.execute("DELETE FROM reply_held WHERE channel = ? AND folder = ? AND"
                           " set_key = ?", (channel, folder, set_key))
            for set_key, (reason, detail, size) in held.items():
                db.execute(
                    "INSERT INTO reply_held (channel, folder, set_key, reason, detail, size,"
                    " since) VALUES (?,?,?,?,?,?,?) ON CONFLICT (channel, folder, set_key)"
                    " DO UPDATE SET reason = excluded.reason, detail = excluded.detail,"
                    " size = excluded.size",
                    (channel, folder, set_key, reason, detail, size, self._clock()))

    def replies_held(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Sets left on the server by the bounds, oldest first; [] from an older journal."""
        query = "SELECT * FROM reply_held"
        params: tuple[str, ...] = ()
        if channel is not None:
            query += " WHERE channel = ?"
            params = (channel,)
        try:
            with self._conns.reading() as db:
                rows = db.execute(query + " ORDER BY since, set_key", params).fetchall()
        except sqlite3.OperationalError:  # a read-only journal from before migration 3
            return []
        return [dict(r) for r in rows]

    def reply_sets(self) -> list[dict[str, Any]]:
        with self._conns.reading() as db:
            rows = db.execute("SELECT * FROM reply_set ORDER BY delivered_at").fetchall()
        return [dict(r) for r in rows]

    def record_reply(self, *, channel: str, folder: str, set_key: str, file_name: str,
                     form_index: int, kind: str, submission_id: int | None,
                     tied_by: str | None, names: dict[str, Any], summary: str) -> None:
        """One reply file (form_index 0) or one form of it, tied or not (idempotent)."""
        with self._conns.tx() as db:
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
            with self._conns.reading() as db:
                rows = db.execute(sql + " ORDER BY id", args).fetchall()
        except sqlite3.OperationalError:
            return []  # a journal of an older flad (version 1), opened read-only
        found = []
        for r in rows:
            row = dict(r)
            row["names"] = json.loads(row["names"]) if row["names"] else {}
            found.append(row)
        return found

    def record_sent_forms(self, sub_id: int, forms: Sequence[SentFormRow]) -> None:
        """The form headers of a checked file (replacing those of an earlier check)."""
        with self._conns.tx() as db:
            db.execute("DELETE FROM sent_form WHERE submission_id = ?", (sub_id,))
            db.executemany(
                "INSERT INTO sent_form (submission_id, form_index, identification,"
                " creation_date, creation_hour, declarant_ref) VALUES (?,?,?,?,?,?)",
                [(sub_id, i, f.identification, f.creation_date, f.creation_hour,
                  f.declarant_reference) for i, f in enumerate(forms, start=1)])

    def sent_forms(self, sub_id: int) -> list[SentFormRow]:
        with self._conns.reading() as db:
            rows = db.execute(
                "SELECT identification, creation_date, creation_hour, declarant_ref FROM"
                " sent_form WHERE submission_id = ? ORDER BY form_index", (sub_id,)).fetchall()
        return [SentFormRow(r[0], r[1], r[2], r[3]) for r in rows]

    def find_by_form(self, channel: str, form: SentFormRow) -> list[Submission]:
        """Sent submissions holding a form with this header (and declarant reference, if given)."""
        answerable = (*states.SENT_STATES, states.State.REFUSED)
        marks = ",".join("?" * len(answerable))
        sql = ("SELECT DISTINCT s.* FROM submission s JOIN sent_form f ON f.submission_id = s.id"
               " WHERE s.channel = ? AND f.identification = ? AND f.creation_date = ?"
               f" AND f.creation_hour = ? AND s.state IN ({marks})")
        args: list[object] = [channel, form.identification, form.creation_date,
                              form.creation_hour, *answerable]
        if form.declarant_reference:
            sql += " AND f.declarant_ref = ?"
            args.append(form.declarant_reference)
        with self._conns.reading() as db:
            rows = db.execute(sql + " ORDER BY s.id", args).fetchall()
        return [Submission(**dict(r)) for r in rows]
