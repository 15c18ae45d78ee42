"""Replies that do not come, and rows old enough to go: the journal's side of both.

Overdue: a sent submission without receipt, or an acknowledged one without its final
notification, past the channel's limit, gets `overdue` set ('receipt' or
'notification'); it is cleared as soon as the awaited reply comes (by the reply's own
transaction) or the condition no longer holds. The first time a submission is found
late for a reply is stamped (`receipt_overdue_at`, `notification_overdue_at`), so
the service says it once, not at every look, across restarts too.

Retention: finished rows (rejected, refused, notified) older than a cut-off go with
their events, sent forms and replies; reply sets removed from the server before it go
too. Sequence numbers come from `sequence_counter`, never from submission rows, and
that table is never pruned: a pruned row cannot give its number back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from flad.journal.connection import Connections
from flad.journal.records import Submission
from flad.journal.states import State

RECEIPT = "receipt"
NOTIFICATION = "notification"
KINDS = (RECEIPT, NOTIFICATION)
#: States whose rows nothing will ever change again.
FINISHED = (State.REJECTED, State.REFUSED, State.NOTIFIED)

#: Where each kind of reply is awaited, as SQL over `submission` (:before is a time).
_LATE = {
    RECEIPT: "state = 'sent' AND receipt_at IS NULL AND sent_at < :before",
    NOTIFICATION: "state = 'acknowledged' AND (notified_at IS NULL OR noti_provisional = 1)"
                  " AND receipt_at < :before",
}


@dataclass(frozen=True)
class Late:
    """A submission found late for `kind` for the first time: the service says it."""

    submission: Submission
    kind: str


@dataclass(frozen=True)
class Pruned:
    submissions: int
    events: int
    replies: int
    reply_sets: int


class Silence:
    """The `overdue` columns of `submission`, and pruning old finished rows."""

    def __init__(self, conns: Connections, clock: Callable[[], float]) -> None:
        self._conns = conns
        self._clock = clock

    def _has_overdue(self, db: sqlite3.Connection) -> bool:
        """False on a journal older than schema 3 (read by `flad status` only)."""
        return any(r[1] == "overdue" for r in db.execute("PRAGMA table_info(submission)"))

    def flag_overdue(self, channel: str, limits: dict[str, float | None]) -> list[Late]:
        """Set and clear `overdue` for one channel; the rows late for the first time.

        `limits`: per kind, the time before which the awaited event (sending, the
        receipt) makes a submission late; None: that kind is never overdue.
        """
        now = self._clock()
        first: list[Late] = []
        with self._conns.tx() as db:
            for kind in KINDS:
                before = limits.get(kind)
                late = _LATE[kind] if before is not None else "0"
                args = {"channel": channel, "kind": kind, "before": before, "now": now}
                db.execute(f"UPDATE submission SET overdue = NULL WHERE channel = :channel"
                           f" AND overdue = :kind AND NOT ({late})", args)
                if before is None:
                    continue
                stamp = f"{kind}_overdue_at"
                rows = db.execute(
                    f"SELECT * FROM submission WHERE channel = :channel AND ({late})"
                    f" AND overdue IS NOT :kind ORDER BY id", args).fetchall()
                for row in rows:
                    db.execute(f"UPDATE submission SET overdue = :kind,"
                               f" {stamp} = COALESCE({stamp}, :now) WHERE id = :id",
                               {**args, "id": row["id"]})
                    if row[stamp] is None:
                        db.execute("INSERT INTO event (submission_id, at, state, detail)"
                                   " VALUES (?,?,?,?)",
                                   (row["id"], now, row["state"], f"{kind} overdue"))
                        first.append(Late(Submission(**{**dict(row), "overdue": kind}),
                                          kind))
        return first

    def overdue_counts(self, channel: str | None = None) -> dict[str, int]:
        """How many submissions wait too long, per kind ('receipt', 'notification')."""
        counts = dict.fromkeys(KINDS, 0)
        with self._conns.reading() as db:
            if not self._has_overdue(db):
                return counts
            rows = db.execute(
                "SELECT overdue, COUNT(*) FROM submission WHERE overdue IS NOT NULL"
                " AND (:channel IS NULL OR channel = :channel) GROUP BY overdue",
                {"channel": channel}).fetchall()
        for kind, n in rows:
            counts[str(kind)] = int(n)
        return counts

    def overdue_by_environment(self) -> dict[tuple[str, str, str], int]:
        """(channel, environment, kind) -> submissions late, for the metrics endpoint."""
        with self._conns.reading() as db:
            if not self._has_overdue(db):
                return {}
            rows = db.execute(
                "SELECT channel, environment, overdue, COUNT(*) FROM submission"
                " WHERE overdue IS NOT NULL GROUP BY channel, environment, overdue").fetchall()
        return {(str(c), str(e), str(k)): int(n) for c, e, k, n in rows}

    def prune_finished(self, before: float) -> Pruned:
        """Remove finished rows last changed before `before`, in one transaction."""
        marks = ",".join("?" * len(FINISHED))
        with self._conns.tx() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS pruned (id INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM pruned")
            db.execute(f"INSERT INTO pruned SELECT id FROM submission WHERE state IN ({marks})"
                       " AND updated_at < ?", (*FINISHED, before))
            inside = "SELECT id FROM pruned"
            events = db.execute(f"DELETE FROM event WHERE submission_id IN ({inside})").rowcount
            db.execute(f"DELETE FROM sent_form WHERE submission_id IN ({inside})")
            replies = db.execute(f"DELETE FROM reply WHERE submission_id IN ({inside})"
                                 " OR (submission_id IS NULL AND at < ?)", (before,)).rowcount
            subs = db.execute(f"DELETE FROM submission WHERE id IN ({inside})").rowcount
            sets = db.execute("DELETE FROM reply_set WHERE state = 'removed' AND removed_at < ?",
                              (before,)).rowcount
            db.execute("DELETE FROM pruned")
        return Pruned(subs, events, replies, sets)
