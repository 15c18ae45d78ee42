"""Replies: complete sets from OUTTEST/OUT into the inbox exactly once, tied to submissions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog.testing

from flad import journal, signing
from flad.cli import main
from flad.config import load
from flad.daemon import sftp_settings
from flad.journal import Journal
from flad.remote import SftpChannel
from flad.replies import ReplyPoller, parse_notification, parse_receipt
from tests.certs import write_test_signer
from tests.harness import make_install, sample
from tests.replysets import acrf, noti, poll, put_set
from tests.sshd import SshServer


def test_parsers_read_the_public_shapes() -> None:
    r = parse_receipt(acrf("GO.FLAX.006400.20261127.00001.T.1", ok=False))
    assert (r.file_name, r.reference, r.accepted, r.error_id) == (
        "GO.FLAX.006400.20261127.00001.T.1", "0380579A83Q1Z", False, "ACRF-129")
    n = parse_notification(noti("REF1", [("B", "FLA-1"), ("W", "FLA-2"), ("W", "FLA-3")]))
    assert (n.reference, n.result, n.blocking, n.other) == ("REF1", 0, 1, 2)


def test_set_without_go_is_left_alone(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"), go=False)
    assert poll(inst) == 0
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(names)
    assert not (inst.inbox / "test").exists() or not os.listdir(inst.inbox / "test")


def test_full_set_is_delivered_go_last_and_removed(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    with structlog.testing.capture_logs() as logs:
        assert poll(inst) == 1
    inbox = inst.inbox / "test"
    assert sorted(os.listdir(inbox)) == sorted(names)
    assert (inbox / names[0]).read_bytes() == acrf("GO.X")
    assert os.listdir(sshd.root / "OUTTEST") == []
    # GO was renamed into place last: local readers can wait for it
    ctimes = {n: (inbox / n).stat().st_ctime_ns for n in names}
    assert ctimes[names[-1]] >= max(ctimes.values())
    renames = [e for e in logs if e["event"] == "reply_delivered"]
    assert renames and renames[0]["files"][-1].startswith("GO.")
    assert not list((inst.inbox / ".incoming").iterdir())
    assert poll(inst) == 0  # nothing twice
    # the GO was removed first on the server: a half-removed set never looks complete
    removes = [p for op, p in sshd.sftp_operations() if op == "remove"]
    assert removes[0].startswith("OUTTEST/GO.")


def test_hostile_remote_names_never_escape_the_inbox(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    out = sshd.root / "OUTTEST"
    hostile = ["..", "...GO", "FO.ACRF.999999.20261127.00002.T\nGO.x", "GO." + "A" * 240,
               "FO.ACRF.999999.20261127.00003.T.tmp", "fo.acrf.999999.20261127.00004.t",
               "GO.ACRF.999999.2026112.00005.T", "GO ACRF 999999",
               "GO.ACRF.999999.20261127.0000é.T"]
    for name in hostile:
        if name == "..":
            continue
        (out / name).write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    cfg = load(inst.config_path)
    db = Journal(cfg.daemon.state_dir / "journal.sqlite3")
    with SftpChannel(sftp_settings(cfg.channels[0])) as transport:
        poller = ReplyPoller(cfg.channels[0], db, transport)  # as the service keeps it
        with structlog.testing.capture_logs() as first:
            assert poller.poll() == 0
        with structlog.testing.capture_logs() as second:
            assert poller.poll() == 0
    db.close()
    skipped = [e for e in first if e["event"] == "reply_name_skipped"]
    assert len(skipped) == len(hostile) - 1
    assert all("\n" not in e["reason"] for e in skipped)
    assert not [e for e in second if e["event"] == "reply_name_skipped"]  # once per name
    assert not (inst.inbox / "test").exists() or os.listdir(inst.inbox / "test") == []
    assert sorted(os.listdir(out)) == sorted(n for n in hostile if n != "..")
    assert os.listdir(tmp_path / "outside") == []


def test_unwritable_inbox_removes_nothing_and_retries(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    inst.inbox.mkdir(parents=True)
    (inst.inbox / "test").write_text("a file where the folder should be")
    with structlog.testing.capture_logs() as logs:
        assert poll(inst) == 0
    assert any(e["event"] == "reply_delivery_failed" for e in logs)
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(names)
    (inst.inbox / "test").unlink()
    assert poll(inst) == 1
    assert os.listdir(sshd.root / "OUTTEST") == []


def test_keep_on_server_delivers_once(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    inst.rewrite(remove_after_download=False)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    assert poll(inst) == 1
    (inst.inbox / "test" / names[0]).unlink()  # the payroll side took it
    assert poll(inst) == 0
    assert not (inst.inbox / "test" / names[0]).exists()
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(names)


def test_reply_trust_verifies_the_fs(tmp_path: Path, sshd: SshServer) -> None:
    platform = write_test_signer(tmp_path / "platform")
    impostor = write_test_signer(tmp_path / "impostor")
    inst = make_install(tmp_path, sshd)
    inst.rewrite(reply_trust=platform.chain_path)
    good = acrf("GO.A")
    bad = acrf("GO.B")
    sign = signing.load_signer_pem
    put_set(sshd, "ACRF", 1, good, fs=signing.make_fs(
        good, sign(platform.cert_path, platform.key_path)))
    bad_names = put_set(sshd, "ACRF", 2, bad, fs=signing.make_fs(
        bad, sign(impostor.cert_path, impostor.key_path)))
    with structlog.testing.capture_logs() as logs:
        assert poll(inst) == 1
    untrusted = [e for e in logs if e["event"] == "reply_untrusted"]
    assert len(untrusted) == 1 and "00002" in untrusted[0]["set_key"]
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(bad_names)
    assert not any("00002" in n for n in os.listdir(inst.inbox / "test"))


def test_crash_between_delivery_and_removal_delivers_once(tmp_path: Path,
                                                          sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    names2 = put_set(sshd, "ACRF", 2, acrf("GO.Y"))
    for point in ("during_reply_download", "after_reply_download", "before_reply_rename",
                  "after_reply_delivery"):
        env = {**os.environ, "FLAD_FAULT_POINT": point}
        proc = subprocess.run([sys.executable, "-m", "flad.cli", "replies", "-c",
                               str(inst.config_path)], env=env, capture_output=True,
                              timeout=60)
        assert proc.returncode == -9, proc.stderr  # killed at the point
    assert main(["replies", "-c", str(inst.config_path)]) == 0
    assert sorted(os.listdir(inst.inbox / "test")) == sorted(names + names2)
    assert os.listdir(sshd.root / "OUTTEST") == []
    db = inst.journal()
    assert [r["state"] for r in db.reply_sets()] == ["removed", "removed"]
    db.close()
    assert main(["replies", "-c", str(inst.config_path)]) == 0
    assert sorted(os.listdir(inst.inbox / "test")) == sorted(names + names2)


def test_receipts_and_notifications_show_in_status(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    inst.drop("good.xml", sample(1))
    inst.drop("bad.xml", sample(2))
    assert inst.run_once() == 0
    subs = {s.drop_name: s for s in inst.submissions()}
    good, bad = subs["good.xml"], subs["bad.xml"]
    assert good.go_name and bad.fi_name
    put_set(sshd, "ACRF", 1, acrf(good.go_name, reference="REFGOOD"))
    put_set(sshd, "ACRF", 2, acrf(bad.fi_name, ok=False, reference="REFBAD"))
    put_set(sshd, "NOTI", 3, noti("REFGOOD", [("B", "FLA-00012"), ("W", "FLA-00100")]))
    put_set(sshd, "DMNO", 4, b"<Other/>")
    assert inst.run_once() == 0
    subs = {s.drop_name: s for s in inst.submissions()}
    assert subs["good.xml"].state == journal.NOTIFIED
    assert subs["good.xml"].receipt_result == 1
    assert (subs["good.xml"].anomalies_blocking, subs["good.xml"].anomalies_other) == (1, 1)
    assert subs["bad.xml"].state == journal.REFUSED
    assert subs["bad.xml"].receipt_error == "ACRF-129"
    assert len(os.listdir(inst.inbox / "test")) == 12  # unknown replies are delivered too

    cap = capsys
    assert main(["status", "-c", str(inst.config_path)]) == 0
    out = cap.readouterr().out
    assert "!! REFUSED" in out and "REFUSED ACRF-129" in out
    assert "!! NOTIFIED" in out and "1 blocking, 1 other" in out
    assert "anomaly B FLA-00012 at /FLADeclaration/Training[1]/Hours" in out
    assert main(["status", "-c", str(inst.config_path), "--json", "--state",
                 "refused"]) == 0
    rows = json.loads(cap.readouterr().out)
    assert [r["drop_name"] for r in rows] == ["bad.xml"]
    assert rows[0]["receipt_error"] == "ACRF-129" and rows[0]["error"]
