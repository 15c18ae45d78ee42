"""Silence noticed (late receipts and notifications) and retention (issue 16, points 5-6).

The journal with a clock the test moves; the service and `flad status` as a new user
runs them, against the sshd fixture; retention over real folders.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from flad import config as config_mod
from flad import logs, overdue, retention
from flad.journal import Journal
from tests import configs
from tests.harness import Running, make_install, sample, wait_for
from tests.sshd import SshServer
from tests.test_cli import flad
from tests.test_journal import DAY, Clock, prepare, receive, sent
from tests.test_metrics import port_of, scrape, value


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


def limits(now: float, minutes: float = 120, hours: float = 72) -> dict[str, float | None]:
    return {"receipt": now - minutes * 60, "notification": now - hours * 3600}


def test_a_late_receipt_is_flagged_once_and_cleared_by_the_receipt(
        db: Journal, clock: Clock) -> None:
    one, two = receive(db, b"1", name="a.xml"), receive(db, b"2", name="b.xml")
    for sub_id in (one, two):
        prepare(db, sub_id)
        sent(db, sub_id)
    clock.now += 119 * 60
    assert db.flag_overdue("acme", limits(clock.now)) == []  # not yet
    clock.now += 2 * 60
    late = db.flag_overdue("acme", limits(clock.now))
    assert [(x.submission.id, x.kind, x.submission.overdue) for x in late] == [
        (one, "receipt", "receipt"), (two, "receipt", "receipt")]
    assert db.flag_overdue("acme", limits(clock.now + 3600)) == []  # said once
    assert db.overdue_counts() == {"receipt": 2, "notification": 0}
    assert db.overdue_counts("other") == {"receipt": 0, "notification": 0}
    assert db.overdue_by_environment() == {("acme", "test", "receipt"): 2}
    assert [e[2] for e in db.events(one)][-1] == "receipt overdue"
    db.record_receipt(one, accepted=True, errors=[], reference="T1", receipt_name="ACRF",
                      type_form="FA", detail=None)
    got = db.get(one)
    assert got is not None and got.overdue is None and got.receipt_overdue_at is not None
    assert db.overdue_counts() == {"receipt": 1, "notification": 0}
    # the notification now waits: late after 72 hours from the receipt
    clock.now += 71 * 3600
    assert db.flag_overdue("acme", limits(clock.now)) == []
    clock.now += 2 * 3600
    late = db.flag_overdue("acme", limits(clock.now))
    assert [(x.submission.id, x.kind) for x in late] == [(one, "notification")]
    # a provisional notification does not end the wait; a final one does
    assert db.record_notification(one, result=3, blocking=0, other=0, anomalies=[],
                                  noti_name="N1", provisional=True)
    assert db.flag_overdue("acme", limits(clock.now)) == []
    assert db.overdue_counts() == {"receipt": 1, "notification": 1}
    assert db.record_notification(one, result=1, blocking=0, other=0, anomalies=[],
                                  noti_name="N2")
    assert db.overdue_counts() == {"receipt": 1, "notification": 0}


def test_a_backlog_of_late_receipts_is_said_in_one_line(tmp_path: Path, db: Journal,
                                                       clock: Clock) -> None:
    for i in range(overdue.LOG_EACH + 5):
        sub_id = receive(db, str(i).encode(), name=f"{i}.xml")
        prepare(db, sub_id)
        sent(db, sub_id)
    clock.now += DAY
    cfg = config_mod.load(configs.write(tmp_path, [configs.channel(tmp_path, "acme")]))
    with capture_logs() as events:
        assert overdue.look(cfg, db, logs.get("test"), clock=clock) == overdue.LOG_EACH + 5
        assert overdue.look(cfg, db, logs.get("test"), clock=clock) == 0
    said = [e for e in events if e["event"] == "receipt_overdue"]
    assert said[0]["count"] == overdue.LOG_EACH + 5  # the summary first
    assert len(said) == 1 + overdue.LOG_EACH and all("drop_name" in e for e in said[1:])


def test_a_limit_switched_off_clears_its_flags(db: Journal, clock: Clock) -> None:
    sub_id = receive(db)
    prepare(db, sub_id)
    sent(db, sub_id)
    clock.now += DAY
    assert len(db.flag_overdue("acme", limits(clock.now))) == 1
    assert db.flag_overdue("acme", {"receipt": None, "notification": None}) == []
    assert db.overdue_counts() == {"receipt": 0, "notification": 0}
    # switched on again: flagged again, but not said again
    assert db.flag_overdue("acme", limits(clock.now)) == []
    assert db.overdue_counts() == {"receipt": 1, "notification": 0}


def test_pruning_keeps_open_rows_and_never_gives_a_number_back(
        db: Journal, clock: Clock) -> None:
    done = receive(db, b"1", name="done.xml")
    first = prepare(db, done)
    sent(db, done)
    db.record_receipt(done, accepted=False, errors=[{"error_id": "E1", "label": None}],
                      reference=None, receipt_name="ACRF", type_form="FA", detail="no")
    bad = receive(db, b"2", name="bad.xml")
    db.mark_rejected(bad, "broken", "/rejected/bad.xml")
    waiting = receive(db, b"3", name="waiting.xml")
    prepare(db, waiting)
    sent(db, waiting)
    db.record_reply_set("acme", "OUTTEST", "ACRF.1", ["GO.ACRF.1"], "delivered")
    db.record_reply_removed("acme", "OUTTEST", "ACRF.1")
    clock.now += 40 * DAY
    fresh = receive(db, b"4", name="fresh.xml")
    db.mark_rejected(fresh, "broken", "/rejected/fresh.xml")
    pruned = db.prune_finished(clock.now - 30 * DAY)
    assert (pruned.submissions, pruned.reply_sets) == (2, 1) and pruned.events >= 5
    assert sorted(s.drop_name for s in db.submissions()) == ["fresh.xml", "waiting.xml"]
    assert db.events(done) == [] and db.reply_sets() == []
    again = receive(db, b"5", name="again.xml")
    numbered = prepare(db, again)  # same sender, date and environment as `first`
    assert first.sequence is not None and numbered.sequence is not None
    assert int(numbered.sequence) == int(first.sequence) + 2  # after `waiting`, never reused


def test_sent_retention_removes_only_old_archived_fi_and_fs(tmp_path: Path) -> None:
    folder = tmp_path / "sent" / "test"
    folder.mkdir(parents=True)
    old = time.time() - 10 * DAY
    names = {"FI.FLAX.006400.20260316.00001.T.1.1": old,
             "FS.FLAX.006400.20260316.00001.T.1.1": old,
             "FI.FLAX.006400.20260316.00002.T.1.1": time.time(),
             "notes.txt": old}
    for name, mtime in names.items():
        (folder / name).write_bytes(b"x" * 10)
        os.utime(folder / name, (mtime, mtime))
    elsewhere = tmp_path / "precious"
    elsewhere.write_bytes(b"keep")
    os.utime(elsewhere, (old, old))
    (folder / "FI.FLAX.006400.20260316.00003.T.1.1").symlink_to(elsewhere)
    removed, freed = retention.clean_sent(folder, time.time() - 5 * DAY)
    assert (removed, freed) == (2, 20)
    assert sorted(os.listdir(folder)) == ["FI.FLAX.006400.20260316.00002.T.1.1",
                                          "FI.FLAX.006400.20260316.00003.T.1.1", "notes.txt"]
    assert elsewhere.read_bytes() == b"keep"
    assert retention.clean_sent(tmp_path / "absent", time.time()) == (0, 0)


def test_sent_retention_never_follows_a_link_planted_as_a_sent_folder(
        tmp_path: Path, db: Journal) -> None:
    """sent/<env> replaced by a link to another folder: nothing there is removed, and
    the refusal is said; the real sent/<env> of another environment is cleaned."""
    channel = configs.channel(tmp_path, "acme")
    cfg = config_mod.load(configs.write(tmp_path, [channel], sent_retention_days=1))
    outbox = cfg.channels[0].outbox
    old = time.time() - 10 * DAY
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (outbox / "sent").mkdir(parents=True)
    (outbox / "sent" / "test").symlink_to(elsewhere)
    real = outbox / "sent" / "simulation"
    real.mkdir()
    for folder in (elsewhere, real):
        (folder / "FI.FLAX.006400.20260316.00001.T.1.1").write_bytes(b"x")
        os.utime(folder / "FI.FLAX.006400.20260316.00001.T.1.1", (old, old))
    with capture_logs() as seen:
        retention.apply(cfg, db, logs.get("test"))
    assert os.listdir(elsewhere) == ["FI.FLAX.006400.20260316.00001.T.1.1"]
    assert os.listdir(real) == []
    assert [e["folder"] for e in seen if e["event"] == "sent_retention_failed"] == [
        str(outbox / "sent" / "test")]
    assert [e["files_removed"] for e in seen if e["event"] == "sent_retention"] == [1]


def test_config_keys_defaults_overrides_and_refusals(tmp_path: Path) -> None:
    channel = configs.channel(tmp_path, "acme")
    cfg = config_mod.load(configs.write(tmp_path, [channel]))
    assert (cfg.daemon.receipt_overdue_minutes, cfg.daemon.notification_overdue_hours,
            cfg.daemon.sent_retention_days, cfg.daemon.journal_retention_days) == (
        120.0, 72.0, 0, 0)
    assert overdue.limits(cfg, cfg.channels[0]) == (120.0, 72.0)
    channel["receipt_overdue_minutes"] = 30
    channel["notification_overdue_hours"] = 0  # this channel: never
    cfg = config_mod.load(configs.write(tmp_path, [channel], receipt_overdue_minutes=60,
                                        sent_retention_days=90))
    assert overdue.limits(cfg, cfg.channels[0]) == (30.0, 0.0)
    assert cfg.daemon.sent_retention_days == 90
    channel["receipt_overdue_minutes"] = -1
    with pytest.raises(config_mod.ConfigError) as err:
        config_mod.load(configs.write(tmp_path, [channel], journal_retention_days=1.5))
    text = "\n".join(err.value.problems)
    assert "receipt_overdue_minutes: must be 0 (off) or more, got -1" in text
    assert "journal_retention_days: must be an integer" in text or \
        "journal_retention_days: must be" in text


def test_an_overdue_submission_shows_first_in_flad_status(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As a new user: a file sent, no receipt comes, `flad status` says so first."""
    monkeypatch.setattr(overdue, "LOOK_SECONDS", 0.2)
    inst = make_install(tmp_path, sshd, receipt_overdue_minutes=0.02,  # 1.2 s
                        metrics_listen="127.0.0.1:0")
    inst.drop("late.xml", sample(1))
    inst.drop("broken.xml", b"<FLADeclaration>")
    with capture_logs() as events, Running(inst) as running:
        wait_for(lambda: any(s.overdue == "receipt" for s in inst.submissions()),
                 timeout=30, what="the late receipt flagged")
        time.sleep(0.5)  # more looks: still said once
        figures = scrape(port_of(running))  # the metrics endpoint (issue 17) counts it
        assert value(figures, "flad_overdue_submissions", channel="acme",
                     environment="test", kind="receipt") == 1
    said = [e for e in events if e["event"] == "receipt_overdue"]
    assert len(said) == 1 and said[0]["drop_name"] == "late.xml"  # once, with its name
    code, out, _ = flad(capsys, "status", "-c", inst.config_path)
    assert code == 0
    rows = [line for line in out.splitlines() if ".xml" in line]
    assert "late.xml" in rows[0] and "!! SENT" in rows[0]  # listed first, marked
    assert "OVERDUE: no receipt since it was sent on" in out
    assert out.splitlines()[-1] == "1 rejected, 1 sent; 1 overdue (flad status --overdue)"
    code, out, _ = flad(capsys, "status", "-c", inst.config_path, "--overdue")
    assert code == 1 and "late.xml" in out and "broken.xml" not in out
    code, out, _ = flad(capsys, "status", "-c", inst.config_path, "--overdue", "--json")
    (row,) = json.loads(out)
    assert row["overdue"] == "receipt" and row["needs_attention"] is True
    # the receipt comes: no longer overdue
    db = inst.journal()
    try:
        db.record_receipt(row["id"], accepted=True, errors=[], reference="T",
                          receipt_name="ACRF", type_form="FA", detail=None)
    finally:
        db.close()
    code, out, _ = flad(capsys, "status", "-c", inst.config_path, "--overdue")
    assert code == 0 and "no submission waits too long" in out


def test_once_flags_late_receipts_at_its_end(tmp_path: Path, sshd: SshServer,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A `flad run --once` from cron notices a file it sent an earlier run."""
    inst = make_install(tmp_path, sshd, receipt_overdue_minutes=0.01)  # 0.6 s
    inst.drop("a.xml", sample(1))
    assert inst.run_once() == 0
    time.sleep(1)
    with capture_logs() as events:
        assert inst.run_once() == 0  # nothing to send; the late receipt is said
    assert [e["drop_name"] for e in events if e["event"] == "receipt_overdue"] == ["a.xml"]
    code, out, _ = flad(capsys, "status", "-c", inst.config_path, "--overdue")
    assert code == 1 and "a.xml" in out


def test_the_service_applies_retention_at_start(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd, sent_retention_days=1, journal_retention_days=1,
                        duplicate_window_days=0)
    inst.drop("a.xml", sample(1))
    assert inst.run_once() == 0
    (sub,) = inst.submissions()
    archived = inst.outbox / "sent" / "test" / str(sub.fi_name)
    assert archived.is_file()
    old = time.time() - 2 * DAY
    os.utime(archived, (old, old))
    db = inst.journal()  # make it finished and old, as after two days
    try:
        db.record_notification(sub.id, result=1, blocking=0, other=0, anomalies=[],
                               noti_name="N")
        with db.connections.tx() as raw:
            raw.execute("UPDATE submission SET updated_at = ?", (old,))
    finally:
        db.close()
    with capture_logs() as events, Running(inst):
        wait_for(lambda: not inst.submissions(), timeout=20, what="the old row pruned")
        wait_for(lambda: not archived.exists(), timeout=20, what="the old FI removed")
    sent_log = [e for e in events if e["event"] == "sent_retention"]
    journal_log = [e for e in events if e["event"] == "journal_retention"]
    assert sent_log and sent_log[0]["files_removed"] == 1
    assert journal_log and journal_log[0]["submissions_pruned"] == 1
