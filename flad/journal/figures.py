"""The journal read for the metrics endpoint: counts, ages and the tail of the events.

Every figure is read at scrape time through the read connection, so a figure never
drifts from what `flad status` shows and no code path has to remember to count. The
events are read as a tail (ids after the last one seen): each state change is counted
once, however often the scraper asks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from flad.journal.connection import Connections
from flad.journal.states import State

#: The states shown as the queue: waiting to go, going, gone without receipt, stuck.
QUEUE_STATES: tuple[State, ...] = (State.RECEIVED, State.PREPARED, State.UPLOADING,
                                   State.SENT, State.FAILED)
#: Events read per query of the tail (a scrape reads until it has them all).
EVENTS_PER_READ = 50_000
#: Below this much free space the journal is not counted as writable (/readyz).
MIN_FREE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Transition:
    """One state change of a submission: `before` is None for a new submission."""

    event_id: int
    channel: str
    environment: str
    before: str | None
    state: str
    detail: str | None


class Figures:
    def __init__(self, connections: Connections) -> None:
        self._conns = connections

    def queue(self) -> dict[tuple[str, str, str], int]:
        """(channel, environment, state) -> submissions, for the states of the queue."""
        marks = ",".join("?" * len(QUEUE_STATES))
        with self._conns.reading() as db:
            rows = db.execute(
                f"SELECT channel, environment, state, COUNT(*) FROM submission"
                f" WHERE state IN ({marks}) GROUP BY channel, environment, state",
                [str(s) for s in QUEUE_STATES]).fetchall()
        return {(str(r[0]), str(r[1]), str(r[2])): int(r[3]) for r in rows}

    def oldest(self, states: Sequence[str], since_column: str) -> dict[tuple[str, str], float]:
        """(channel, environment) -> the earliest `since_column` among `states`."""
        assert since_column in ("received_at", "sent_at")  # never text from outside
        marks = ",".join("?" * len(states))
        with self._conns.reading() as db:
            rows = db.execute(
                f"SELECT channel, environment, MIN({since_column}) FROM submission"
                f" WHERE state IN ({marks}) AND {since_column} IS NOT NULL"
                f" GROUP BY channel, environment", [str(s) for s in states]).fetchall()
        return {(str(r[0]), str(r[1])): float(r[2]) for r in rows if r[2] is not None}

    def last_event_id(self) -> int:
        with self._conns.reading() as db:
            row = db.execute("SELECT MAX(id) FROM event").fetchone()
        return int(row[0] or 0)

    def transitions_after(self, after_id: int,
                          limit: int = EVENTS_PER_READ) -> list[Transition]:
        """The events after `after_id`, each with the state its submission had before.

        An event that repeats the state (a late receipt recorded, a second upload step)
        comes back with `before == state`: the caller counts moves, not rows.
        """
        with self._conns.reading() as db:
            rows = db.execute(
                "SELECT e.id, s.channel, s.environment, e.state, e.detail,"
                " (SELECT p.state FROM event p WHERE p.submission_id = e.submission_id"
                "  AND p.id < e.id ORDER BY p.id DESC LIMIT 1)"
                " FROM event e JOIN submission s ON s.id = e.submission_id"
                " WHERE e.id > ? ORDER BY e.id LIMIT ?", (after_id, limit)).fetchall()
        return [Transition(int(r[0]), str(r[1]), str(r[2]),
                           None if r[5] is None else str(r[5]), str(r[3]),
                           None if r[4] is None else str(r[4])) for r in rows]

    def writable(self) -> str | None:
        """None when a write transaction can be opened now, else why not (for /readyz)."""
        if self._conns.readonly:
            return "the journal is open read-only"
        try:
            with self._conns.tx() as db:  # the write lock taken, nothing changed
                db.execute("SELECT 1")
            disk = os.statvfs(self._conns.path.parent)
        except Exception as exc:
            return f"the journal cannot be written: {exc}"
        if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES:
            return f"the journal's file system is full ({self._conns.path.parent})"
        return None
