"""The journal's two SQLite connections and the rules they are opened with.

The writer runs in WAL mode with full sync, so a state change is on disk when its
transaction returns; its transactions are short and `BEGIN IMMEDIATE`, so two writers
(the service and `flad resend`) queue on SQLite's lock instead of failing half-way.
Reads go through a second connection: with WAL they never wait for a writer's commit
(and its sync), so checks and `flad status` run beside uploads. A read-only journal
(`flad status` while the service runs) has the one connection, opened `mode=ro`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: How long a statement waits for another connection's lock before it fails.
BUSY_TIMEOUT_MS = 10_000

#: SQLite's primary codes for a file that is no database, or a damaged one
_DAMAGED_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


class JournalUnreadable(RuntimeError):
    """The journal file is no SQLite database, or a damaged one.

    Said in one line with what to do, never as a traceback: an admin reading it must
    not start flad on a fresh journal, which would number files again from 00001 (the
    platform refuses names it has seen, ACRF-133).
    """

    def __init__(self, path: Path, error: sqlite3.Error) -> None:
        self.path = path
        super().__init__(
            f"the journal {path} cannot be read: {error} (a damaged file, or not a flad "
            f"journal). Stop flad, keep the file aside (mv {path} {path}.damaged) and restore "
            "the state folder's last copy; `sqlite3 FILE .recover` may save its rows. Do not "
            "start on an empty journal: it would reuse sequence numbers")


def is_damage(error: BaseException) -> bool:
    """True for SQLite's 'file is not a database' and 'database disk image is malformed'."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.DatabaseError) and code is not None \
        and code & 0xFF in _DAMAGED_CODES


@contextmanager
def damage_named(path: Path) -> Iterator[None]:
    """Turn SQLite's damage errors inside the block into `JournalUnreadable` for `path`."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise JournalUnreadable(path, exc) from exc
        raise


class Connections:
    """One journal file's writer and reader; safe to share between threads of one process."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.RLock()
        self._read_lock = threading.Lock()
        #: the thread whose `batch` holds the writer's transaction open, if any
        self._batch_owner: int | None = None
        if readonly:
            self.writer = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10,
                                          check_same_thread=False, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                          isolation_level=None)
            self.writer.execute("PRAGMA journal_mode=WAL")
            self.writer.execute("PRAGMA synchronous=FULL")
        self.writer.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self.writer.row_factory = sqlite3.Row
        self.reader = self.writer
        if not readonly:
            self.reader = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                          isolation_level=None)
            self.reader.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.reader.row_factory = sqlite3.Row

    def close(self) -> None:
        with self._lock, self._read_lock:
            if self.reader is not self.writer:
                self.reader.close()
            self.writer.close()

    def _in_batch(self) -> bool:
        return self._batch_owner == threading.get_ident()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The read connection, for one or a few SELECTs (no transaction is held).

        Inside a `batch` of this thread, the writer: its reads see what the batch wrote.
        """
        if self._in_batch():
            with self._lock:
                yield self.writer
            return
        with self._read_lock:
            yield self.reader

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Several `tx` blocks of this thread as one transaction, one commit (one sync).

        For work done many times in a row whose records may land together (a slice of
        reply sets): all of them are durable when the block ends, or none. Keep it
        short: other writers wait for it. A batch inside a batch joins the outer one.
        """
        with self._lock:
            if self._in_batch():
                yield
                return
            self.writer.execute("BEGIN IMMEDIATE")
            self._batch_owner = threading.get_ident()
            try:
                yield
            except BaseException:
                self._batch_owner = None
                self.writer.execute("ROLLBACK")
                raise
            self._batch_owner = None
            self.writer.execute("COMMIT")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back on any error.

        Inside a `batch` of this thread it is part of the batch's transaction.
        """
        with self._lock:
            if self._in_batch():
                yield self.writer
                return
            self.writer.execute("BEGIN IMMEDIATE")
            try:
                yield self.writer
            except BaseException:
                self.writer.execute("ROLLBACK")
                raise
            self.writer.execute("COMMIT")
