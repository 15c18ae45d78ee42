"""The journal's schema versions: a journal of the previous release, opened by this code.

The previous release (commit fde4337) wrote no schema version (`user_version` 0); its
SQL is copied below as it shipped, so this test keeps proving the upgrade from it even
after the code's own schema moves on. Never edit it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from flad import journal, naming
from flad.cli import main
from flad.journal import Journal, JournalTooNew, TransitionError, schema, states
from tests import configs
from tests.harness import STANDIN_XSD

SENDER = "006400"
DATE = "20260316"
DAY = datetime.date(2026, 3, 16)
NOW = 1_770_000_000.0

# flad/journal.py at fde4337, verbatim
PREVIOUS_RELEASE_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS channel_state (
    channel      TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    error        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL,
    updated_at   REAL NOT NULL
);
"""


#: (state, sequence index or None, upload step) of each row the old service left
OLD_ROWS = [
    ("received", None, None),
    ("rejected", None, None),
    ("prepared", 1, None),
    ("uploading", 2, "go"),
    ("sent", 3, "done"),
    ("failed", 4, "data"),
    ("acknowledged", 5, "done"),
    ("refused", 6, "done"),
    ("notified", 7, "done"),
]


def old_journal(path: Path) -> dict[int, tuple[str, str | None]]:
    """A journal as the previous release left it: every state, numbers 00001-00007.

    Returns {id: (state, sequence)} of what was written.
    """
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(PREVIOUS_RELEASE_SCHEMA)
    written: dict[int, tuple[str, str | None]] = {}
    db.execute("BEGIN")
    for n, (state, index, step) in enumerate(OLD_ROWS, start=1):
        content = f"file {n}".encode()
        sequence = naming.sequence_for(index) if index else None
        names = (naming.submission_names("FLAX", SENDER, DAY, sequence, "T", 1)
                 if sequence else None)
        cur = db.execute(
            "INSERT INTO submission (channel, application, environment, drop_name,"
            " spool_path, sha256, size, state, received_at, updated_at, sender, file_date,"
            " sequence, fi_name, fs_name, go_name, upload_step, sent_at, error,"
            " rejected_path, reference_nbr, receipt_result, receipt_error, noti_result)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ("acme", "fla", "test", f"f{n}.xml", f"/spool/f{n}.xml",
             hashlib.sha256(content).hexdigest(), len(content), state, NOW + n, NOW + n,
             SENDER if sequence else None, DATE if sequence else None, sequence,
             names.fi[0] if names else None, None, names.go if names else None, step,
             NOW + n if step == "done" else None,
             "refused by the check" if state in ("rejected", "failed") else None,
             f"/rejected/f{n}.xml" if state == "rejected" else None,
             f"REF{n}" if state in ("acknowledged", "refused", "notified") else None,
             {"acknowledged": 1, "refused": 0, "notified": 1}.get(state),
             "ACRF-133" if state == "refused" else None,
             1 if state == "notified" else None))
        sub_id = int(cur.lastrowid or 0)
        db.execute("INSERT INTO event (submission_id, at, state, detail) VALUES (?,?,?,?)",
                   (sub_id, NOW + n, "received", f"f{n}.xml"))
        if state != "received":
            db.execute("INSERT INTO event (submission_id, at, state, detail) VALUES (?,?,?,?)",
                       (sub_id, NOW + n, state, None))
        written[sub_id] = (state, sequence)
    db.execute("INSERT INTO sequence_counter VALUES (?, ?, 'T', 7)", (SENDER, DATE))
    db.execute("INSERT INTO reply_set VALUES ('acme', 'OUTTEST', 'ACRF.999999.20260316.00001.T',"
               " '[\"FO.ACRF.999999.20260316.00001.T\"]', 'removed', 7, ?, ?)", (NOW, NOW))
    db.execute("INSERT INTO channel_state VALUES ('acme', 'connected', NULL, 0, NULL, ?)",
               (NOW,))
    db.execute("COMMIT")
    db.close()
    return written


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_a_previous_release_journal_opens_with_every_row_state_and_number(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    written = old_journal(path)
    assert user_version(path) == 0
    with capture_logs() as logs:
        db = Journal(path, clock=lambda: NOW + 100)
    try:
        migrated = [(e["from_version"], e["to_version"]) for e in logs
                    if e["event"] == "journal_migrated"]
        assert migrated == [(m.version - 1, m.version) for m in schema.MIGRATIONS]
        assert user_version(path) == schema.LATEST == 3
        subs = db.submissions()
        assert {s.id: (s.state, s.sequence) for s in subs} == written
        assert {s.state for s in subs} == set(journal.STATES)  # every state survived
        by_state = {s.state: s for s in subs}
        assert by_state["notified"].reference_nbr == "REF9"
        assert by_state["refused"].receipt_error == "ACRF-133"
        assert by_state["rejected"].rejected_path == "/rejected/f2.xml"
        assert by_state["notified"].noti_forms is None  # a column of version 2, empty
        assert [(st, d) for _, st, d in db.events(by_state["sent"].id)] == [
            ("received", "f5.xml"), ("sent", None)]
        assert [c.state for c in db.channel_states()] == ["connected"]
        assert [r["state"] for r in db.reply_sets()] == ["removed"]
        assert db.reply_set_state("acme", "OUTTEST", "ACRF.999999.20260316.00001.T") == \
            "removed"
        assert db.replies() == []  # the table of version 2 is there, empty

        # numbering goes on from the old counter: no number is given twice
        used = {seq for _, _, _, seq in db.sequences_used()}
        assert used == {naming.sequence_for(i) for i in range(1, 8)}
        fresh = db.prepare(by_state["received"].id, sender=SENDER, file_date=DATE,
                           environment_letter="T", application_code="FLAX", signed=False)
        assert fresh.sequence == "00008" and fresh.sequence not in used
        new_id = db.add_received(channel="acme", application="fla", environment="test",
                                 drop_name="new.xml", spool_path="/spool/new.xml",
                                 sha256="ab", size=2)
        assert new_id == max(written) + 1
        assert db.prepare(new_id, sender=SENDER, file_date=DATE, environment_letter="T",
                          application_code="FLAX", signed=False).sequence == "00009"

        # the old rows go on through the state machine
        db.mark_sent(by_state["uploading"].id)
        db.requeue(by_state["failed"].id, "/spool/again.xml", force=True)
        db.record_sent_forms(by_state["sent"].id, [journal.SentFormRow("DMFA", "2026-03-16",
                                                                       "10:00:00")])
        assert db.sent_forms(by_state["sent"].id)[0].identification == "DMFA"
    finally:
        db.close()
    with capture_logs() as logs:
        Journal(path).close()  # opened again: nothing left to migrate
    assert [e for e in logs if e["event"] == "journal_migrated"] == []


def test_a_development_journal_without_a_version_is_upgraded_in_place(
        tmp_path: Path) -> None:
    """Between the releases, journals got the version 2 columns at every open, unnumbered."""
    path = tmp_path / "journal.sqlite3"
    old_journal(path)
    raw = sqlite3.connect(path)
    for column in ("receipt_errors", "receipt_type_form"):
        raw.execute(f"ALTER TABLE submission ADD COLUMN {column} TEXT")
    raw.commit()
    raw.close()
    db = Journal(path)
    try:
        assert db.version == schema.LATEST and len(db.submissions()) == len(OLD_ROWS)
        db.record_reply(channel="acme", folder="OUTTEST", set_key="k", file_name="FO.X",
                        form_index=0, kind="DMNO", submission_id=None, tied_by=None,
                        names={}, summary="s")
        assert [r["kind"] for r in db.replies(unmatched_only=True)] == ["DMNO"]
    finally:
        db.close()


def test_readonly_open_of_an_older_journal_reads_and_does_not_migrate(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    written = old_journal(path)
    before = path.read_bytes()
    with capture_logs() as logs:
        reader = Journal(path, readonly=True)
    try:
        assert reader.needs_upgrade and reader.version == 0
        assert {s.id: (s.state, s.sequence) for s in reader.submissions()} == written
        assert reader.replies(unmatched_only=True) == []  # no reply table yet
    finally:
        reader.close()
    (warning,) = [e for e in logs if e["event"] == "journal_needs_upgrade"]
    assert warning["version"] == 0 and warning["latest"] == schema.LATEST
    assert "upgrades it" in warning["hint"]
    assert user_version(path) == 0 and path.read_bytes() == before


def test_a_journal_newer_than_this_flad_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    raw.commit()
    raw.close()
    copy = tmp_path / "copy.sqlite3"
    shutil.copyfile(path, copy)
    for readonly in (False, True):
        with pytest.raises(JournalTooNew) as refused:
            Journal(path, readonly=readonly)
        message = str(refused.value)
        assert f"schema version {schema.LATEST + 1}" in message
        assert f"versions up to {schema.LATEST}" in message
        assert "newer flad" in message and "restore the copy" in message
    assert user_version(path) == schema.LATEST + 1
    assert path.read_bytes() == copy.read_bytes()  # untouched


def test_a_failed_migration_leaves_the_version_it_had(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.sqlite3"
    written = old_journal(path)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE submission ADD COLUMN half_done TEXT")
        raise sqlite3.OperationalError("disk I/O error")

    steps = list(schema.MIGRATIONS)
    steps[1] = schema.Migration(2, "broken", broken)
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(steps))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        Journal(path)
    assert user_version(path) == 1  # migration 1 committed, 2 rolled back whole
    raw = sqlite3.connect(path)
    columns = {r[1] for r in raw.execute("PRAGMA table_info(submission)")}
    raw.close()
    assert "half_done" not in columns
    monkeypatch.undo()
    db = Journal(path)
    try:
        assert {s.id: (s.state, s.sequence) for s in db.submissions()} == written
    finally:
        db.close()


def test_writers_opening_an_old_journal_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    old_journal(path)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            barrier.wait()
            Journal(path).close()
        except BaseException as exc:
            errors.append(exc)

    with capture_logs() as logs:
        threads = [threading.Thread(target=opener) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert sorted((e["from_version"], e["to_version"]) for e in logs
                  if e["event"] == "journal_migrated") == [
        (m.version - 1, m.version) for m in schema.MIGRATIONS]
    assert user_version(path) == schema.LATEST


# -- the transition table ---------------------------------------------------------------

def test_the_table_names_every_state() -> None:
    assert set(states.TRANSITIONS) == set(journal.State)
    reachable = {states.INITIAL} | {t for targets in states.TRANSITIONS.values()
                                    for t in targets}
    assert reachable == set(journal.State)
    # a state change that would send again never appears
    for answered in (journal.SENT, journal.ACKNOWLEDGED, journal.REFUSED, journal.NOTIFIED):
        assert not {journal.RECEIVED, journal.PREPARED, journal.UPLOADING} & \
            states.TRANSITIONS[answered]
    assert journal.SENT == "sent" and journal.OPEN_STATES == ("received", "prepared",
                                                              "uploading")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite3", clock=lambda: NOW)
    try:
        yield j
    finally:
        j.close()


def _received(db: Journal, name: str = "a.xml") -> int:
    return db.add_received(channel="acme", application="fla", environment="test",
                           drop_name=name, spool_path=f"/spool/{name}",
                           sha256=hashlib.sha256(name.encode()).hexdigest(), size=1)


def _sent(db: Journal, name: str = "a.xml") -> int:
    sub_id = _received(db, name)
    db.prepare(sub_id, sender=SENDER, file_date=DATE, environment_letter="T",
               application_code="FLAX", signed=False)
    db.mark_uploading(sub_id, "data")
    db.mark_sent(sub_id)
    return sub_id


def test_an_illegal_transition_names_the_submission_its_state_and_the_one_asked(
        db: Journal) -> None:
    sub_id = _sent(db)
    before = db.get(sub_id)
    events = db.events(sub_id)
    with pytest.raises(TransitionError) as refused:
        db.mark_rejected(sub_id, "late refusal", "/rejected/a.xml")  # had no guard
    err = refused.value
    assert (err.sub_id, err.current, err.target) == (sub_id, "sent", journal.REJECTED)
    assert str(err) == (f"submission {sub_id} is sent, expected one of received: it cannot "
                        "become rejected")
    assert isinstance(err, ValueError)  # what the guards always raised
    assert db.get(sub_id) == before and db.events(sub_id) == events
    with pytest.raises(TransitionError, match=f"submission {sub_id} is sent, expected one "
                                              "of prepared, uploading: it cannot become "
                                              "uploading"):
        db.mark_uploading(sub_id, "go")


def test_a_receipt_moves_a_sent_submission_but_never_one_already_notified(
        db: Journal) -> None:
    sub_id = _sent(db)
    db.record_receipt(sub_id, accepted=True, errors=[], reference="T1", receipt_name="FO.A",
                      type_form="PA", detail=None)
    assert db.get(sub_id).state == journal.ACKNOWLEDGED  # type: ignore[union-attr]
    assert db.record_notification(sub_id, result=1, blocking=0, other=0, anomalies=[],
                                  noti_name="FO.N")
    db.record_receipt(sub_id, accepted=False, errors=[{"error_id": "ACRF-133"}],
                      reference=None, receipt_name="FO.B", type_form="FA", detail="late")
    sub = db.get(sub_id)
    assert sub is not None and sub.state == journal.NOTIFIED
    assert sub.receipt_name == "FO.B" and sub.receipt_error == "ACRF-133"  # recorded
    assert db.events(sub_id)[-1][1:] == (
        "notified", "late; stays notified (cannot become refused)")


def test_a_reply_tied_to_a_submission_not_sent_leaves_its_state(db: Journal) -> None:
    sub_id = _received(db)
    db.record_receipt(sub_id, accepted=True, errors=[], reference="T1", receipt_name="FO.A",
                      type_form="FA", detail=None)
    assert db.record_notification(sub_id, result=1, blocking=0, other=0, anomalies=[],
                                  noti_name="FO.N")
    sub = db.get(sub_id)
    assert sub is not None and sub.state == journal.RECEIVED
    assert (sub.reference_nbr, sub.noti_name) == ("T1", "FO.N")


def test_a_receipt_after_a_failure_past_the_go_says_it_arrived(db: Journal) -> None:
    sub_id = _received(db)
    db.prepare(sub_id, sender=SENDER, file_date=DATE, environment_letter="T",
               application_code="FLAX", signed=False)
    db.mark_uploading(sub_id, "go")
    assert db.mark_failed(sub_id, "connection lost after the GO")
    db.record_receipt(sub_id, accepted=True, errors=[], reference="T1", receipt_name="FO.A",
                      type_form="FA", detail=None)
    assert db.get(sub_id).state == journal.ACKNOWLEDGED  # type: ignore[union-attr]
    with pytest.raises(TransitionError, match="is acknowledged, expected one of rejected, "
                                              "failed"):
        db.requeue(sub_id, "/spool/a.xml", force=True)  # it reached the platform


# -- the commands --------------------------------------------------------------------

def _config(tmp_path: Path) -> Path:
    app = {"name": "fla", "code": "FLAX", "xsd": STANDIN_XSD, "root_element": "FLADeclaration"}
    return configs.write(tmp_path, [configs.channel(tmp_path, port=9, application=[app])])


def test_status_reads_an_older_journal_and_says_it_waits_for_an_upgrade(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / "journal.sqlite3"
    written = old_journal(path)
    capsys.readouterr()
    assert main(["status", "-c", str(config), "--json"]) == 0
    out, err = capsys.readouterr()
    assert {r["id"]: (r["state"], r["sequence"]) for r in json.loads(out)} == written
    assert "journal_needs_upgrade" in err
    assert user_version(path) == 0  # status never migrates


def test_every_command_refuses_a_journal_newer_than_this_flad(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    path = tmp_path / "state" / "journal.sqlite3"
    Journal(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    raw.commit()
    raw.close()
    for command in (["status"], ["resend", "1"], ["run", "--once", "--max-wait", "1"]):
        capsys.readouterr()
        assert main([*command, "-c", str(config)]) == 2
        _, err = capsys.readouterr()
        assert f"flad: the journal {path} is at schema version {schema.LATEST + 1}" in err
        assert f"this flad knows versions up to {schema.LATEST}" in err


def _asks(db: Journal, sub_id: int, target: journal.State) -> None:
    """Ask the journal, through its public method, to move `sub_id` to `target`."""
    if target is journal.RECEIVED:
        db.requeue(sub_id, "/spool/again.xml", force=True)
    elif target is journal.REJECTED:
        db.mark_rejected(sub_id, "refused", "/rejected/a.xml")
    elif target is journal.PREPARED:
        db.prepare(sub_id, sender=SENDER, file_date=DATE, environment_letter="T",
                   application_code="FLAX", signed=False)
    elif target is journal.UPLOADING:
        db.mark_uploading(sub_id, "go")
    elif target is journal.SENT:
        db.mark_sent(sub_id)
    elif target is journal.FAILED:
        if not db.mark_failed(sub_id, "broken"):
            raise TransitionError(sub_id, None, target)  # its way of saying no
    elif target in (journal.ACKNOWLEDGED, journal.REFUSED):
        db.record_receipt(sub_id, accepted=target is journal.ACKNOWLEDGED, errors=[],
                          reference=None, receipt_name="FO.A", type_form="FA", detail=None)
    else:
        db.record_notification(sub_id, result=1, blocking=0, other=0, anomalies=[],
                               noti_name="FO.N")


@pytest.mark.parametrize("target", list(journal.State))
@pytest.mark.parametrize("current", list(journal.State))
def test_every_move_follows_the_table(db: Journal, current: journal.State,
                                      target: journal.State) -> None:
    """Each pair of states, through the method that asks for the move: done exactly
    when the table lists it. Replies never raise (the poller must go on): where the
    table says no, their verdict is recorded and the state stays."""
    sub_id = _received(db)
    raw = sqlite3.connect(db.path)
    with raw:
        raw.execute("UPDATE submission SET state = ? WHERE id = ?", (current, sub_id))
    raw.close()
    legal = target in states.TRANSITIONS[current]
    replies = target in (journal.ACKNOWLEDGED, journal.REFUSED, journal.NOTIFIED)
    if legal or replies:
        _asks(db, sub_id, target)
    else:
        with pytest.raises(TransitionError):
            _asks(db, sub_id, target)
    sub = db.get(sub_id)
    assert sub is not None and sub.state == (target if legal else current)
