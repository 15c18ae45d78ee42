"""Each channel's connection state (connected, retrying, failed), for `flad status`.

Kept apart from the submissions: it changes with the network, not with a file, and
no submission's state depends on it.
"""

from __future__ import annotations

from collections.abc import Callable

from flad.journal.connection import Connections
from flad.journal.records import ChannelState


class Channels:
    """The `channel_state` table."""

    def __init__(self, conns: Connections, clock: Callable[[], float]) -> None:
        self._conns = conns
        self._clock = clock

    def set_channel_state(self, channel: str, state: str, *, error: str | None = None,
                          attempts: int = 0, next_attempt: float | None = None) -> None:
        with self._conns.tx() as db:
            db.execute(
                "INSERT INTO channel_state (channel, state, error, attempts, next_attempt,"
                " updated_at) VALUES (?,?,?,?,?,?) ON CONFLICT (channel) DO UPDATE SET"
                " state = excluded.state, error = excluded.error,"
                " attempts = excluded.attempts, next_attempt = excluded.next_attempt,"
                " updated_at = excluded.updated_at",
                (channel, state, error, attempts, next_attempt, self._clock()))

    def channel_states(self) -> list[ChannelState]:
        with self._conns.reading() as db:
            rows = db.execute("SELECT * FROM channel_state ORDER BY channel").fetchall()
        return [ChannelState(**dict(r)) for r in rows]
