"""The journal's batch calls: claims, numbering with the duplicate check, state changes
for many submissions at once, and reads through the second connection."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flad import journal, naming
from flad.journal import Journal, Naming, Received
from tests.test_journal import DATE, DAY, SENDER, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path, clock: Clock) -> Iterator[Journal]:
    j = Journal(tmp_path / "state" / "journal.sqlite3", clock=clock)
    try:
        yield j
    finally:
        j.close()


def received(content: bytes, name: str, *, channel: str = "acme", application: str = "fla",
             environment: str = "test") -> Received:
    return Received(channel, application, environment, name, f"/spool/{name}",
                    hashlib.sha256(content).hexdigest(), len(content))


def naming_for(sub_id: int, env: str = "T") -> Naming:
    return Naming(sub_id, SENDER, DATE, env, "FLAX", signed=env == "R")


def events_count(path: Path) -> int:
    raw = sqlite3.connect(path)
    try:
        return int(raw.execute("SELECT COUNT(*) FROM event").fetchone()[0])
    finally:
        raw.close()


# -- add_received_many -----------------------------------------------------------------

def test_add_received_many_journals_a_drop_in_order(db: Journal, clock: Clock) -> None:
    files = [received(f"<x>{i}</x>".encode(), f"f{i}.xml") for i in range(5)]
    ids = db.add_received_many(files)
    assert len(ids) == 5 and ids == sorted(ids) and len(set(ids)) == 5
    subs = db.get_many(ids)
    assert [(s.drop_name, s.spool_path, s.sha256, s.size, s.state) for s in subs] == [
        (f.drop_name, f.spool_path, f.sha256, f.size, journal.RECEIVED) for f in files]
    assert {s.received_at for s in subs} == {clock.now}
    for sub_id, f in zip(ids, files, strict=True):
        assert [(state, detail) for _, state, detail in db.events(sub_id)] == [
            (journal.RECEIVED, f.drop_name)]
    assert db.add_received_many([]) == []


def test_add_received_many_is_one_transaction(db: Journal) -> None:
    """A row that breaks a constraint takes the whole drop back: no half-journaled drop."""
    good = received(b"a", "a.xml")
    broken = Received("acme", "fla", "test", "b.xml", "/spool/b.xml", "x",
                      None)  # type: ignore[arg-type]  # size NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        db.add_received_many([good, broken])
    assert db.submissions() == []
    assert events_count(db.path) == 0


# -- get_many, open_states, received_sizes ---------------------------------------------

def test_get_many_keeps_the_order_asked_and_skips_missing(db: Journal) -> None:
    ids = db.add_received_many([received(bytes([i]), f"g{i}.xml") for i in range(4)])
    wanted = [ids[3], 9999, ids[0], ids[2]]
    assert [s.id for s in db.get_many(wanted)] == [ids[3], ids[0], ids[2]]
    assert [s.drop_name for s in db.get_many(wanted)] == ["g3.xml", "g0.xml", "g2.xml"]
    assert db.get_many([]) == []
    assert db.get_many([12345]) == []


def test_open_states_and_received_sizes(db: Journal) -> None:
    ids = db.add_received_many([received(b"o" * (i + 1), f"o{i}.xml") for i in range(6)])
    other = db.add_received_many([received(b"z", "z.xml", channel="other")])[0]
    db.prepare_many([naming_for(ids[1]), naming_for(ids[2]), naming_for(ids[3])],
                    duplicate_window_days=0)
    db.mark_uploading_many([ids[2], ids[3]], "data")
    db.mark_sent_many([ids[3]])
    db.mark_rejected(ids[4], "bad", "/rejected/o4.xml")
    assert db.open_states("acme") == [
        (ids[0], journal.RECEIVED), (ids[1], journal.PREPARED),
        (ids[2], journal.UPLOADING), (ids[5], journal.RECEIVED)]
    assert db.open_states("other") == [(other, journal.RECEIVED)]
    assert db.open_states("nobody") == []
    assert db.received_sizes("acme", 10) == [(ids[0], 1), (ids[5], 6)]
    assert db.received_sizes("acme", 1) == [(ids[0], 1)]  # the oldest first
    assert db.received_sizes("other", 10) == [(other, 1)]


# -- prepare_many ----------------------------------------------------------------------

def test_prepare_many_numbers_consecutively_in_request_order(db: Journal) -> None:
    ids = db.add_received_many([received(bytes([i]), f"p{i}.xml") for i in range(5)])
    order = [ids[3], ids[0], ids[4], ids[1], ids[2]]
    outcomes = db.prepare_many([naming_for(i) for i in order], duplicate_window_days=30)
    assert [o.before.id for o in outcomes] == order
    assert all(o.before.state == journal.RECEIVED and o.earlier is None for o in outcomes)
    prepared = [o.prepared for o in outcomes]
    assert [p.sequence if p else None for p in prepared] == [
        "00001", "00002", "00003", "00004", "00005"]
    for p in prepared:
        assert p is not None
        # what prepare_many returns is what the journal now holds, field by field
        assert db.get(p.id) == p
        assert p.fi_name == f"FI.FLAX.{SENDER}.{DATE}.{p.sequence}.T.1.1"
        assert p.go_name == f"GO.FLAX.{SENDER}.{DATE}.{p.sequence}.T.1"
        assert p.fs_name is None
    more = db.add_received_many([received(b"x", "later.xml")])
    (later,) = db.prepare_many([naming_for(more[0], "R")], duplicate_window_days=30)
    assert later.prepared is not None and later.prepared.sequence == "00001"  # R: own counter
    assert later.prepared.fs_name == f"FS.FLAX.{SENDER}.{DATE}.00001.R.1.1"


def test_prepare_many_refuses_the_second_copy_in_the_same_call(db: Journal) -> None:
    ids = db.add_received_many([received(b"same", "one.xml"), received(b"other", "x.xml"),
                                received(b"same", "two.xml"), received(b"more", "y.xml")])
    outcomes = db.prepare_many([naming_for(i) for i in ids], duplicate_window_days=30)
    first, other, dup, more = outcomes
    assert first.prepared is not None and first.earlier is None
    assert dup.prepared is None and dup.earlier is not None
    assert dup.earlier.id == ids[0] and dup.earlier.fi_name == first.prepared.fi_name
    assert dup.before.id == ids[2] and dup.before.state == journal.RECEIVED
    # the duplicate took no number: the numbers stay consecutive
    assert [o.prepared.sequence for o in (first, other, more) if o.prepared] == [
        "00001", "00002", "00003"]
    # the journal leaves the duplicate received, for the pipeline to refuse with a reason
    assert db.get(ids[2]).state == journal.RECEIVED  # type: ignore[union-attr]
    assert db.received_sizes("acme", 10) == [(ids[2], 4)]


def test_prepare_many_finds_a_copy_numbered_by_an_earlier_call(db: Journal) -> None:
    ids = db.add_received_many([received(b"same", "one.xml"), received(b"same", "two.xml")])
    (first,) = db.prepare_many([naming_for(ids[1])], duplicate_window_days=30)
    assert first.prepared is not None
    (second,) = db.prepare_many([naming_for(ids[0])], duplicate_window_days=30)
    assert second.prepared is None
    assert second.earlier is not None and second.earlier.id == ids[1]


def test_duplicate_check_scope_and_window(db: Journal, clock: Clock) -> None:
    ids = db.add_received_many([received(b"same", "a.xml")])
    db.prepare_many([naming_for(ids[0])], duplicate_window_days=30)
    clock.now += 10 * DAY
    others = db.add_received_many([
        received(b"same", "prod.xml", environment="production"),
        received(b"same", "dmfa.xml", application="dmfa"),
        received(b"same", "other.xml", channel="other"),
    ])
    outcomes = db.prepare_many([naming_for(others[0], "R"), naming_for(others[1]),
                                naming_for(others[2])], duplicate_window_days=30)
    assert all(o.prepared is not None for o in outcomes)  # not the same channel/app/env

    again = db.add_received_many([received(b"same", "again.xml")])[0]
    (off,) = db.prepare_many([naming_for(again)], duplicate_window_days=0)  # check off
    assert off.prepared is not None

    clock.now += 25 * DAY  # 35 days after the first, 25 after `again`
    late = db.add_received_many([received(b"same", "late.xml")])[0]
    (outcome,) = db.prepare_many([naming_for(late)], duplicate_window_days=30)
    assert outcome.earlier is not None and outcome.earlier.id == again  # the first is too old
    late2 = db.add_received_many([received(b"same", "late2.xml")])[0]
    (outcome,) = db.prepare_many([naming_for(late2)], duplicate_window_days=20)
    assert outcome.prepared is not None  # both earlier copies are outside 20 days


def test_rejected_and_failed_copies_are_no_duplicates(db: Journal) -> None:
    ids = db.add_received_many([received(b"same", "r.xml"), received(b"same", "f.xml"),
                                received(b"same", "new.xml")])
    db.mark_rejected(ids[0], "XSD error", "/rejected/r.xml")
    db.prepare_many([naming_for(ids[1])], duplicate_window_days=0)
    db.mark_failed(ids[1], "refused by the server")
    (outcome,) = db.prepare_many([naming_for(ids[2])], duplicate_window_days=30)
    assert outcome.prepared is not None


def test_force_send_skips_the_duplicate_check(db: Journal) -> None:
    ids = db.add_received_many([received(b"same", "a.xml"), received(b"same", "b.xml")])
    first, dup = db.prepare_many([naming_for(i) for i in ids], duplicate_window_days=30)
    assert first.prepared is not None and dup.prepared is None
    db.mark_rejected(ids[1], "duplicate", "/rejected/b.xml")

    db.requeue(ids[1], "/spool/b.xml", force=False)
    (still,) = db.prepare_many([naming_for(ids[1])], duplicate_window_days=30)
    assert still.prepared is None  # a plain resend is still a duplicate
    db.mark_rejected(ids[1], "duplicate", "/rejected/b.xml")

    db.requeue(ids[1], "/spool/b.xml", force=True)
    (forced,) = db.prepare_many([naming_for(ids[1])], duplicate_window_days=30)
    assert forced.prepared is not None and forced.earlier is None
    assert forced.prepared.sequence == "00002"


def test_prepare_many_is_all_or_nothing(db: Journal) -> None:
    ids = db.add_received_many([received(bytes([i]), f"n{i}.xml") for i in range(3)])
    db.prepare_many([naming_for(ids[1])], duplicate_window_days=0)  # 00001
    before = events_count(db.path)
    with pytest.raises(ValueError, match=f"submission {ids[1]} is not waiting"):
        db.prepare_many([naming_for(ids[0]), naming_for(ids[1]), naming_for(ids[2])],
                        duplicate_window_days=30)
    assert [s.state for s in db.get_many(ids)] == [
        journal.RECEIVED, journal.PREPARED, journal.RECEIVED]
    assert events_count(db.path) == before
    # ids[0] was numbered inside the rolled-back transaction: the counter went back too
    (again,) = db.prepare_many([naming_for(ids[0])], duplicate_window_days=30)
    assert again.prepared is not None and again.prepared.sequence == "00002"


# -- mark_uploading_many, mark_sent_many -----------------------------------------------

def test_mark_many_moves_every_submission_together(db: Journal, clock: Clock) -> None:
    ids = db.add_received_many([received(bytes([i]), f"m{i}.xml") for i in range(4)])
    db.prepare_many([naming_for(i) for i in ids], duplicate_window_days=0)
    clock.now += 5
    db.mark_uploading_many(ids, "data")
    assert {(s.state, s.upload_step) for s in db.get_many(ids)} == {
        (journal.UPLOADING, "data")}
    db.mark_uploading_many(ids, "go")
    clock.now += 5
    db.mark_sent_many(ids)
    subs = db.get_many(ids)
    assert {(s.state, s.upload_step, s.sent_at, s.error) for s in subs} == {
        (journal.SENT, "done", clock.now, None)}
    for sub_id in ids:
        assert [(st, d) for _, st, d in db.events(sub_id)][-3:] == [
            (journal.UPLOADING, "data"), (journal.UPLOADING, "go"), (journal.SENT, None)]


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_mark_sent_many_one_wrong_state_changes_nothing(db: Journal, which: str) -> None:
    ids = db.add_received_many([received(bytes([i]), f"w{i}.xml") for i in range(3)])
    db.prepare_many([naming_for(i) for i in ids], duplicate_window_days=0)
    wrong = {"first": ids[0], "middle": ids[1], "last": ids[2]}[which]
    db.mark_uploading_many([i for i in ids if i != wrong], "go")
    before = db.get_many(ids)
    events = events_count(db.path)
    with pytest.raises(ValueError, match=f"submission {wrong} is prepared, expected one of "
                                         "uploading"):
        db.mark_sent_many(ids)
    assert db.get_many(ids) == before  # not one row moved, not even updated_at
    assert events_count(db.path) == events
    with pytest.raises(ValueError, match="99999 is absent"):
        db.mark_sent_many([*[i for i in ids if i != wrong], 99999])
    assert db.get_many(ids) == before


def test_mark_uploading_many_one_wrong_state_changes_nothing(db: Journal) -> None:
    ids = db.add_received_many([received(bytes([i]), f"u{i}.xml") for i in range(3)])
    db.prepare_many([naming_for(ids[0]), naming_for(ids[2])], duplicate_window_days=0)
    before = db.get_many(ids)
    events = events_count(db.path)
    with pytest.raises(ValueError, match=f"submission {ids[1]} is received"):
        db.mark_uploading_many(ids, "data")
    assert db.get_many(ids) == before
    assert events_count(db.path) == events
    db.mark_uploading_many([ids[0]], "data")
    db.mark_sent_many([ids[0]])
    with pytest.raises(ValueError, match=f"submission {ids[0]} is sent"):
        db.mark_uploading_many([ids[2], ids[0]], "go")  # a sent one never goes back
    assert db.get(ids[2]).state == journal.PREPARED  # type: ignore[union-attr]


# -- reads on their own connection -----------------------------------------------------

def test_reads_use_a_second_connection(db: Journal) -> None:
    assert db.connections.reader is not db.connections.writer


def test_every_write_is_visible_to_the_next_read(db: Journal) -> None:
    for i in range(40):
        (sub_id,) = db.add_received_many([received(bytes([i]), f"v{i}.xml")])
        assert db.get(sub_id) is not None
        assert db.received_sizes("acme", 1000)[-1] == (sub_id, 1)
        (outcome,) = db.prepare_many([naming_for(sub_id)], duplicate_window_days=0)
        assert outcome.prepared is not None
        assert db.open_states("acme")[-1] == (sub_id, journal.PREPARED)
        db.mark_uploading_many([sub_id], "data")
        assert db.get_many([sub_id])[0].state == journal.UPLOADING
        db.mark_sent_many([sub_id])
        sub = db.get(sub_id)
        assert sub is not None and sub.state == journal.SENT
        assert sub.sequence == naming.sequence_for(i + 1)
        assert db.find_sent("acme", sub.go_name or "") == sub
        assert db.open_states("acme") == []
    db.set_channel_state("acme", "connected")
    assert [c.state for c in db.channel_states()] == ["connected"]


def test_reads_are_not_held_up_by_a_write_in_progress(db: Journal) -> None:
    """While the writer connection sits in a transaction, reads answer at once with the
    last committed state (WAL), and see the writer's change as soon as it commits."""
    (sub_id,) = db.add_received_many([received(b"a", "a.xml")])
    in_tx = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with db.connections.tx() as conn:
            conn.execute("UPDATE submission SET state = 'failed' WHERE id = ?", (sub_id,))
            in_tx.set()
            release.wait(10)

    writer = threading.Thread(target=hold)
    writer.start()
    try:
        assert in_tx.wait(10)
        reader_done = threading.Event()
        seen: list[str] = []

        def read() -> None:
            sub = db.get(sub_id)
            seen.append(sub.state if sub else "absent")
            reader_done.set()

        threading.Thread(target=read).start()
        assert reader_done.wait(2), "a read waited for the writer's transaction"
        assert seen == [journal.RECEIVED]
    finally:
        release.set()
        writer.join(10)
    assert db.get(sub_id).state == journal.FAILED  # type: ignore[union-attr]


def test_a_hash_left_to_the_check_is_journaled_when_numbered(db: Journal) -> None:
    """A big file is claimed with no sha256; numbering writes the check's, then looks
    for an earlier copy with it, in the same transaction."""
    content = b"<big/>" * 10
    digest = hashlib.sha256(content).hexdigest()
    first, second = db.add_received_many([
        dataclasses.replace(received(content, name), sha256="") for name in ("a", "b")])
    assert db.get_many([first, second])[0].sha256 == ""
    outcomes = db.prepare_many(
        [dataclasses.replace(naming_for(i), sha256=digest) for i in (first, second)],
        duplicate_window_days=7)
    assert outcomes[0].prepared is not None and outcomes[0].prepared.sha256 == digest
    assert outcomes[1].prepared is None and outcomes[1].earlier is not None
    assert outcomes[1].earlier.id == first and outcomes[1].before.sha256 == digest
    assert [s.sha256 for s in db.get_many([first, second])] == [digest, digest]


def test_a_hash_from_the_claim_is_never_replaced(db: Journal) -> None:
    (sub_id,) = db.add_received_many([received(b"<x/>", "x")])
    db.prepare_many([dataclasses.replace(naming_for(sub_id), sha256="0" * 64)],
                    duplicate_window_days=7)
    assert db.get_many([sub_id])[0].sha256 == hashlib.sha256(b"<x/>").hexdigest()
