"""The journal alone: a real SQLite file in tmp_path, no server, no folders to watch."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flad import journal, naming
from flad.journal import Journal

DAY = 86400.0
SENDER = "006400"
DATE = "20260316"


class Clock:
    """A clock a test moves by hand (the journal takes time as a parameter)."""

    def __init__(self, now: float = 1_770_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "state" / "journal.sqlite3")
    try:
        yield j
    finally:
        j.close()


def receive(db: Journal, content: bytes = b"<x/>", *, channel: str = "acme",
            application: str = "fla", environment: str = "test", name: str = "a.xml") -> int:
    return db.add_received(channel=channel, application=application, environment=environment,
                           drop_name=name, spool_path=f"/spool/{name}",
                           sha256=hashlib.sha256(content).hexdigest(), size=len(content))


def prepare(db: Journal, sub_id: int, *, env: str = "T", date: str = DATE,
            sender: str = SENDER) -> journal.Submission:
    return db.prepare(sub_id, sender=sender, file_date=date, environment_letter=env,
                      application_code="FLAX", signed=env == "R")


def sent(db: Journal, sub_id: int) -> None:
    db.mark_uploading(sub_id, "fi")
    db.mark_uploading(sub_id, "go")
    db.mark_sent(sub_id)


# -- sequence numbers ------------------------------------------------------------------

def test_each_environment_and_date_starts_at_00001(db: Journal) -> None:
    got = {}
    for env in ("T", "R"):
        for date in ("20260316", "20260317"):
            first = prepare(db, receive(db, name=f"{env}{date}-1.xml"), env=env, date=date)
            second = prepare(db, receive(db, name=f"{env}{date}-2.xml"), env=env, date=date)
            got[env, date] = (first.sequence, second.sequence)
            assert first.fi_name == f"FI.FLAX.{SENDER}.{date}.00001.{env}.1.1"
            assert first.go_name == f"GO.FLAX.{SENDER}.{date}.00001.{env}.1"
            assert (first.fs_name is not None) == (env == "R")
    assert set(got.values()) == {("00001", "00002")}
    # another sender on the same date and env has its own counter
    other = prepare(db, receive(db, name="other.xml"), sender="006401")
    assert other.sequence == "00001"
    assert sorted(db.sequences_used()) == sorted(
        [(SENDER, d, e, s) for (e, d) in got for s in ("00001", "00002")]
        + [("006401", DATE, "T", "00001")])


def test_a_number_is_never_reused_after_failure(db: Journal) -> None:
    first = receive(db, name="first.xml")
    assert prepare(db, first).sequence == "00001"
    db.mark_uploading(first, "fi")
    db.mark_failed(first, "permission denied on INTEST")
    assert db.get(first).state == journal.FAILED  # type: ignore[union-attr]

    db.requeue(first, "/spool/again/first.xml", force=False)
    again = db.get(first)
    assert again is not None and again.state == journal.RECEIVED
    assert again.sequence is None and again.fi_name is None
    assert prepare(db, first).sequence == "00002"  # 00001 may have reached the server

    # a failure before any upload burns its number too
    second = receive(db, name="second.xml")
    assert prepare(db, second).sequence == "00003"
    db.mark_failed(second, "signing failed")
    assert prepare(db, receive(db, name="third.xml")).sequence == "00004"


def test_after_99999_comes_a0000(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    db = Journal(path)
    try:
        assert prepare(db, receive(db, name="one.xml")).sequence == "00001"
        raw = sqlite3.connect(path)
        with raw:
            raw.execute("UPDATE sequence_counter SET last_index = 99998 WHERE sender = ? AND"
                        " file_date = ? AND environment = 'T'", (SENDER, DATE))
        raw.close()
        assert prepare(db, receive(db, name="last.xml")).sequence == "99999"
        rolled = prepare(db, receive(db, name="rolled.xml"))
        assert rolled.sequence == "A0000"
        assert rolled.fi_name == f"FI.FLAX.{SENDER}.{DATE}.A0000.T.1.1"
        assert naming.parse(rolled.fi_name).sequence == "A0000"
        assert prepare(db, receive(db, name="next.xml")).sequence == "A0001"
        # the other environment is untouched by the roll-over
        assert prepare(db, receive(db, name="prod.xml"), env="R").sequence == "00001"
    finally:
        db.close()


def test_four_threads_allocate_800_distinct_numbers(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()  # schema first, so the threads only race on the counter
    results: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        db = Journal(path)  # a connection of its own: the race is SQLite's to arbitrate
        try:
            ids = [receive(db, bytes([n, i % 256, i // 256]), name=f"t{n}-{i}.xml")
                   for i in range(200)]
            barrier.wait()
            for sub_id in ids:
                sequence = prepare(db, sub_id).sequence
                assert sequence is not None
                results[n].append(sequence)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    every = [s for r in results for s in r]
    assert len(every) == 800
    assert sorted(every) == [naming.sequence_for(i) for i in range(1, 801)]
    for r in results:
        assert r == sorted(r)  # each thread sees its own numbers grow


def test_threads_sharing_one_journal_get_distinct_numbers(db: Journal) -> None:
    ids = [receive(db, bytes([i % 256, i // 256]), name=f"s{i}.xml") for i in range(400)]
    got: list[str] = []
    lock = threading.Lock()

    def worker(part: list[int]) -> None:
        for sub_id in part:
            sequence = prepare(db, sub_id).sequence
            with lock:
                got.append(sequence or "")

    threads = [threading.Thread(target=worker, args=(ids[n::4],)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == [naming.sequence_for(i) for i in range(1, 401)]


# -- the state machine -----------------------------------------------------------------

def test_prepare_refuses_anything_but_received(db: Journal) -> None:
    sub_id = receive(db)
    prepare(db, sub_id)
    with pytest.raises(ValueError, match="not waiting to be prepared"):
        prepare(db, sub_id)  # already prepared: a second number would be a second send
    rejected = receive(db, name="bad.xml")
    db.mark_rejected(rejected, "not well-formed", "/rejected/bad.xml")
    with pytest.raises(ValueError, match="not waiting to be prepared"):
        prepare(db, rejected)
    with pytest.raises(ValueError, match="not waiting to be prepared"):
        prepare(db, 999)
    # the refused attempts took no number
    assert prepare(db, receive(db, name="next.xml")).sequence == "00002"


def test_mark_sent_only_after_uploading(db: Journal) -> None:
    sub_id = receive(db)
    with pytest.raises(ValueError, match="is received, expected one of uploading"):
        db.mark_sent(sub_id)
    prepare(db, sub_id)
    with pytest.raises(ValueError, match="is prepared, expected one of uploading"):
        db.mark_sent(sub_id)
    with pytest.raises(ValueError, match="absent"):
        db.mark_sent(12345)
    db.mark_uploading(sub_id, "fi")
    db.mark_sent(sub_id)
    sub = db.get(sub_id)
    assert sub is not None and sub.state == journal.SENT and sub.upload_step == "done"
    with pytest.raises(ValueError, match="is sent"):
        db.mark_sent(sub_id)  # only once
    with pytest.raises(ValueError, match="is sent"):
        db.mark_uploading(sub_id, "go")


@pytest.mark.parametrize("state", ["received", "prepared", "uploading", "sent"])
def test_requeue_only_from_rejected_or_failed(db: Journal, state: str) -> None:
    sub_id = receive(db)
    if state != "received":
        prepare(db, sub_id)
    if state in ("uploading", "sent"):
        db.mark_uploading(sub_id, "fi")
    if state == "sent":
        db.mark_sent(sub_id)
    with pytest.raises(ValueError, match=f"is {state}, expected one of rejected, failed"):
        db.requeue(sub_id, "/spool/x", force=True)
    assert db.get(sub_id).state == state  # type: ignore[union-attr]


def test_requeue_from_rejected_clears_the_reason(db: Journal) -> None:
    sub_id = receive(db)
    db.mark_rejected(sub_id, "duplicate of FI.x", "/rejected/a.xml")
    db.requeue(sub_id, "/spool/new/a.xml", force=True)
    sub = db.get(sub_id)
    assert sub is not None
    assert (sub.state, sub.error, sub.rejected_path, sub.spool_path, sub.force_send) == (
        journal.RECEIVED, None, None, "/spool/new/a.xml", 1)


def test_events_record_every_state(tmp_path: Path) -> None:
    clock = Clock()
    db = Journal(tmp_path / "j.sqlite3", clock=clock)
    try:
        sub_id = receive(db, name="a.xml")
        clock.now += 1
        sub = prepare(db, sub_id)
        clock.now += 1
        db.mark_uploading(sub_id, "fi")
        db.mark_uploading(sub_id, "go")
        db.mark_failed(sub_id, "connection reset")
        db.requeue(sub_id, "/spool/b", force=False)
        clock.now += 1
        again = prepare(db, sub_id)
        sent(db, sub_id)
        events = db.events(sub_id)
    finally:
        db.close()
    assert [(state, detail) for _, state, detail in events] == [
        ("received", "a.xml"), ("prepared", sub.fi_name), ("uploading", "fi"),
        ("uploading", "go"), ("failed", "connection reset"), ("received", "resend"),
        ("prepared", again.fi_name), ("uploading", "fi"), ("uploading", "go"),
        ("sent", None)]
    times = [at for at, _, _ in events]
    assert times == sorted(times) and times[0] == 1_770_000_000.0


# -- the database file ------------------------------------------------------------------

def test_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    db = Journal(path)
    try:
        # the journal's own connection (synchronous is a per-connection setting)
        conn = db.connections.writer
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    finally:
        db.close()
    other = sqlite3.connect(path)  # WAL is a property of the file: it stays
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_readonly_reader_is_not_blocked_by_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    db = Journal(path)
    committed = receive(db, name="committed.xml")
    writer = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE submission SET state = 'failed' WHERE id = ?", (committed,))
        writer.execute(
            "INSERT INTO submission (channel, application, environment, drop_name,"
            " spool_path, sha256, size, state, received_at, updated_at)"
            " VALUES ('acme', 'fla', 'test', 'uncommitted.xml', '/s', 'x', 1, 'received',"
            " 0, 0)")
        started = time.monotonic()
        reader = Journal(path, readonly=True)
        try:
            subs = reader.submissions()
            channels = reader.channel_states()
        finally:
            reader.close()
        assert time.monotonic() - started < 2.0  # busy_timeout is 10 s: it never waited
        assert [(s.drop_name, s.state) for s in subs] == [("committed.xml", "received")]
        assert channels == []
        # the writer journal itself can still read too; its writes wait for the lock
        assert db.get(committed).state == "received"  # type: ignore[union-attr]
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        db.close()


def test_readonly_journal_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    Journal(path).close()
    reader = Journal(path, readonly=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            receive(reader)
    finally:
        reader.close()


def test_a_spool_path_taken_twice_finds_the_latest_submission(db: Journal) -> None:
    first = db.add_received(channel="c", application="fla", environment="test",
                            drop_name="a.xml", spool_path="/spool/x_a.xml", sha256="0" * 64,
                            size=1)
    second = db.add_received(channel="c", application="fla", environment="test",
                             drop_name="a.xml", spool_path="/spool/x_a.xml", sha256="1" * 64,
                             size=1)
    assert first < second
    found = db.by_spool_path("/spool/x_a.xml")
    assert found is not None and found.id == second
    assert db.by_spool_path("/spool/other.xml") is None
