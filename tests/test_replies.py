"""Replies: complete sets from OUTTEST/OUT into the inbox exactly once, tied to submissions."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import structlog.testing

from flad import journal, signing
from flad.channel.replies import ReplyPoller
from flad.cli import main
from flad.config import load
from flad.journal import Journal
from flad.remote import SftpChannel
from tests.certs import write_test_signer
from tests.harness import Install, make_install, sample
from tests.replysets import (
    acrf,
    anomaly,
    from_example,
    noti_form,
    notification,
    poll,
    put_set,
)
from tests.sshd import SshServer
from tests.test_replyparse import SMALL_ERROR_CODES


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
    downloaded = next(e for e in logs if e["event"] == "reply_downloaded")
    assert downloaded["sha256"] == {n: hashlib.sha256((inbox / n).read_bytes()).hexdigest()
                                    for n in names}  # hashed as it streamed
    assert not [p for p in (inst.inbox / ".incoming").rglob("*") if not p.is_dir()]
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
    with SftpChannel(cfg.channels[0].sftp) as transport:
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


def test_reply_trust_checks_every_file_of_a_set(tmp_path: Path, sshd: SshServer) -> None:
    """A set of GO + TD/FI without any FS, an FS that signs nothing: neither is a set the
    platform writes, neither is delivered as trusted (issue 15, item 9). A GO with
    content is not judged: the platform's documents say nothing of a reply's GO."""
    platform = write_test_signer(tmp_path / "platform")
    inst = make_install(tmp_path, sshd)
    inst.rewrite(reply_trust=platform.chain_path)
    signer = signing.load_signer_pem(platform.cert_path, platform.key_path)
    out = sshd.root / "OUTTEST"
    base = "ACRF.999999.{date}.{seq:05d}.T"
    good = acrf("GO.A")
    good_names = put_set(sshd, "ACRF", 1, good, fs=signing.make_fs(good, signer))
    date = good_names[0].split(".")[3]
    hostile: dict[int, list[str]] = {}
    # 2: GO + TD + FI, no FS at all (the old check looked at FO/CO only)
    b2 = base.format(date=date, seq=2)
    for name, body in ((f"TD.{b2}", b""), (f"FI.{b2}", b"<x/>"), (f"GO.{b2}", b"")):
        (out / name).write_bytes(body)
    hostile[2] = [f"TD.{b2}", f"FI.{b2}", f"GO.{b2}"]
    # 3: a signed FO, plus an FI beside it
    body3 = acrf("GO.C")
    hostile[3] = put_set(sshd, "ACRF", 3, body3, fs=signing.make_fs(body3, signer))
    (out / f"FI.{base.format(date=date, seq=3)}").write_bytes(b"unsigned")
    hostile[3].append(f"FI.{base.format(date=date, seq=3)}")
    # 4: a signed FO whose GO carries bytes: delivered, its data is what is checked
    body4 = acrf("GO.D")
    with_bytes = put_set(sshd, "ACRF", 4, body4, fs=signing.make_fs(body4, signer))
    (out / f"GO.{base.format(date=date, seq=4)}").write_bytes(b"payload")
    with structlog.testing.capture_logs() as logs:
        assert poll(inst) == 2
    reasons = {e["set_key"].split(".")[3]: e["reason"] for e in logs
               if e["event"] == "reply_untrusted"}
    assert set(reasons) == {"00002", "00003"}
    assert "holds no FO or CO file" in reasons["00002"]
    assert "a FI file is not one the platform sends" in reasons["00003"]
    delivered = sorted(os.listdir(inst.inbox / "test"))
    assert delivered == sorted(good_names + with_bytes)
    left = sorted(os.listdir(out))
    assert left == sorted(n for names in hostile.values() for n in names)


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


def _status(inst: Install, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()  # what the service logged before
    assert main(["status", "-c", str(inst.config_path), *args]) == 0
    return capsys.readouterr().out


def test_receipts_and_notifications_show_in_status(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    codes = tmp_path / "ErrorCodes.xml"
    codes.write_bytes(SMALL_ERROR_CODES)
    inst = make_install(tmp_path, sshd, error_codes=codes)
    inst.drop("good.xml", sample(1))
    inst.drop("bad.xml", sample(2))
    assert inst.run_once() == 0
    subs = {s.drop_name: s for s in inst.submissions()}
    good, bad = subs["good.xml"], subs["bad.xml"]
    assert good.go_name and bad.fi_name
    put_set(sshd, "ACRF", 1, acrf(good.go_name, reference="REFGOOD"))
    put_set(sshd, "ACRF", 2, acrf(bad.fi_name, reference="REFBAD",
                                  errors=("ACRF-088", "ACRF-172")))
    put_set(sshd, "NOTI", 3, notification(noti_form(
        file_name=good.go_name, ticket="380000B5WX004", result=0,
        anomalies=(anomaly("00011-155", "B", label="Ongeldig RSZ-nummer", tag="Hours",
                           value="25", inss="85073003328"),
                   anomaly("00024-003", "W", label=None, tag=None, value=None, inss=None,
                           line=None)))))
    put_set(sshd, "DMNO", 4, b"<Other/>")
    with structlog.testing.capture_logs() as logs:
        assert inst.run_once() == 0
    subs = {s.drop_name: s for s in inst.submissions()}
    assert subs["good.xml"].state == journal.NOTIFIED
    assert subs["good.xml"].receipt_result == 1
    assert subs["good.xml"].noti_result == 0
    assert (subs["good.xml"].anomalies_blocking, subs["good.xml"].anomalies_other) == (1, 1)
    assert subs["bad.xml"].state == journal.REFUSED
    assert subs["bad.xml"].receipt_error == "ACRF-088 ACRF-172"  # every code, not the first
    assert len(os.listdir(inst.inbox / "test")) == 12  # unknown replies are delivered too
    assert [e["kind"] for e in logs if e["event"] == "reply_other"] == ["DMNO"]

    out = _status(inst, capsys=capsys)
    assert "!! REFUSED" in out and "REFUSED ACRF-088 ACRF-172 (FA)" in out
    assert "receipt error ACRF-088: Schéma Inconnu" in out
    assert "receipt error ACRF-172: Te veel aangiften" in out
    assert "!! NOTIFIED" in out and "NOK 1 blocking, 1 other" in out
    assert ("anomaly 00011-155 class B: Ongeldig RSZ-nummer (tag Hours, value '25', worker "
            "INSS 85073003328, line 12 column 7)") in out
    assert "anomaly 00024-003 class W" in out
    rows = json.loads(_status(inst, "--json", capsys=capsys))
    by_name = {r["drop_name"]: r for r in rows}
    assert by_name["bad.xml"]["needs_attention"] is True
    assert by_name["bad.xml"]["receipt_errors"] == [
        {"error_id": "ACRF-088", "label": "Schéma Inconnu"},
        {"error_id": "ACRF-172", "label": "Te veel aangiften"}]
    assert by_name["bad.xml"]["error"]
    good_row = by_name["good.xml"]
    assert good_row["needs_attention"] is True and good_row["noti_meaning"] == "NOK"
    assert good_row["anomalies"][0] == {
        "error_id": "00011-155", "class": "B", "label": "Ongeldig RSZ-nummer", "tag": "Hours",
        "value": "25", "location": {"line": "12", "column": "7"},
        "path": {"NOSSRegistrationNbr": "199999934", "INSS": "85073003328"}, "form": 1}
    assert good_row["anomalies"][1]["path"] == {} and good_row["anomalies"][1]["label"] is None
    assert good_row["noti_forms"][0]["tied_by"] == "file_name"
    refused = json.loads(_status(inst, "--json", "--state", "refused", capsys=capsys))
    assert [r["drop_name"] for r in refused] == ["bad.xml"]

    unmatched = _status(inst, "--unmatched", capsys=capsys)
    assert "DMNO" in unmatched and "FO.DMNO.999999.20261127.00004.T" in unmatched
    assert "1 reply without a submission" in unmatched


def test_documentation_examples_tie_to_what_flad_sent(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    """The platform's own example replies, their FileName set to a name flad sent."""
    receipt = from_example("ACRF_20231_1.xml")
    inst = make_install(tmp_path, sshd)
    inst.drop("good.xml", sample(1))
    assert inst.run_once() == 0
    (sub,) = inst.submissions()
    assert sub.go_name
    put_set(sshd, "ACRF", 1, from_example("ACRF_20231_1.xml", sub.go_name))
    assert receipt != from_example("ACRF_20231_1.xml", sub.go_name)
    assert poll(inst) == 1
    (sub,) = inst.submissions()
    assert (sub.state, sub.receipt_type_form, sub.reference_nbr) == (
        journal.ACKNOWLEDGED, "PA", "3400001Y1P01G")  # a PA receipt's verdict counts
    put_set(sshd, "NOTI", 2, from_example("NOTIFICATION_20223_1.xml", sub.go_name))
    assert poll(inst) == 1
    (sub,) = inst.submissions()
    assert (sub.state, sub.noti_result, sub.noti_type_form) == (journal.NOTIFIED, 1, "FA")
    out = _status(inst, capsys=capsys)
    assert "!!" not in out and "OK (PA)" in out and "OK 0 blocking, 0 other" in out
    (row,) = json.loads(_status(inst, "--json", capsys=capsys))
    assert row["needs_attention"] is False
    assert row["noti_forms"][0]["handled_form"] == {
        "identification": "AOAT001", "creation_date": "2009-01-22",
        "creation_hour": "09:43:00.002"}
    assert row["noti_forms"][0]["employer"] == {"NOSSRegistrationNbr": "70500472",
                                                "CompanyID": "400767772"}


def _dimona(hour: str, own: str) -> bytes:
    """A file of an application whose forms carry the platform's header."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Dimona><Form>'
            f"<Identification>DIMONA</Identification><FormCreationDate>2026-11-27"
            f"</FormCreationDate><FormCreationHour>{hour}</FormCreationHour>"
            f"<AttestationStatus>0</AttestationStatus><TypeForm>SU</TypeForm>"
            f"<Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>1</ReferenceOrigin>"
            f"<ReferenceNbr>{own}</ReferenceNbr></Reference>"
            f"<EmployerId>0123456749</EmployerId></Form></Dimona>").encode()


def test_notification_without_file_reference_ties_by_the_sent_form(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    inst.rewrite(application=[*inst.channel["application"],
                              {"name": "dimona", "code": "DIMN"}])
    inst.drop("a.xml", _dimona("09:00:00.001", "OWN-A"), app="dimona")
    inst.drop("b.xml", _dimona("09:00:00.002", "OWN-B"), app="dimona")
    inst.drop("twin1.xml", _dimona("10:00:00.000", "TWIN"), app="dimona")
    inst.drop("twin2.xml", _dimona("10:00:00.000", "TWIN") + b"<!-- 2 -->", app="dimona")
    assert inst.run_once() == 0
    subs = {s.drop_name: s for s in inst.submissions()}
    assert {s.state for s in subs.values()} == {journal.SENT}
    db = inst.journal()
    assert [f.declarant_reference for f in db.sent_forms(subs["b.xml"].id)] == ["OWN-B"]
    db.close()
    put_set(sshd, "NOTI", 1, notification(
        noti_form(handled=("DIMONA", "2026-11-27", "09:00:00.002"), declarant="OWN-B",
                  result=1),
        noti_form(handled=("DIMONA", "2026-11-27", "10:00:00.000"), result=1),
        noti_form(handled=("DIMONA", "2026-11-27", "11:11:11.111"), result=1)))
    with structlog.testing.capture_logs() as logs:
        assert poll(inst) == 1
    subs = {s.drop_name: s for s in inst.submissions()}
    assert subs["b.xml"].state == journal.NOTIFIED
    assert json.loads(subs["b.xml"].noti_forms or "[]")[0]["tied_by"] == "form"
    assert subs["a.xml"].state == journal.SENT
    assert {subs["twin1.xml"].state, subs["twin2.xml"].state} == {journal.SENT}
    ambiguous = [e for e in logs if e["event"] == "reply_ambiguous"]
    assert len(ambiguous) == 1 and ambiguous[0]["by"] == "form"
    assert sorted(ambiguous[0]["submissions"]) == sorted(
        [subs["twin1.xml"].id, subs["twin2.xml"].id])
    unmatched = [e for e in logs if e["event"] == "reply_unmatched"]
    assert [e["form"] for e in unmatched] == [2, 3]
    out = _status(inst, "--unmatched", capsys=capsys)
    assert "NOTIFICATION form 2" in out and "NOTIFICATION form 3" in out
    assert '"creation_hour": "11:11:11.111"' in out
    rows = json.loads(_status(inst, "--unmatched", "--json", capsys=capsys))
    assert [(r["kind"], r["form_index"]) for r in rows] == [("NOTIFICATION", 2),
                                                           ("NOTIFICATION", 3)]


def test_provisional_then_final_notification(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    inst.drop("good.xml", sample(1))
    assert inst.run_once() == 0
    (sub,) = inst.submissions()
    assert sub.go_name
    put_set(sshd, "ACRF", 1, acrf(sub.go_name))
    put_set(sshd, "NOTI", 2, notification(noti_form(file_name=sub.go_name, type_form="PA",
                                                    result=3)))
    assert poll(inst) == 2
    (sub,) = inst.submissions()
    assert sub.state == journal.ACKNOWLEDGED  # the wait for the final answer goes on
    assert (sub.noti_result, sub.noti_provisional, sub.noti_type_form) == (3, 1, "PA")
    out = _status(inst, capsys=capsys)
    assert "!! ACKNOWLEDGED" in out and "PROVISIONAL 3 temporary answer" in out
    (row,) = json.loads(_status(inst, "--json", capsys=capsys))
    assert row["needs_attention"] is True and row["noti_provisional"] is True

    put_set(sshd, "NOTI", 3, notification(noti_form(file_name=sub.go_name, result=1)))
    assert poll(inst) == 1
    (sub,) = inst.submissions()
    assert (sub.state, sub.noti_result, sub.noti_provisional) == (journal.NOTIFIED, 1, 0)
    (row,) = json.loads(_status(inst, "--json", capsys=capsys))
    assert row["needs_attention"] is False

    # a provisional answer that arrives late never hides the final one
    put_set(sshd, "NOTI", 4, notification(noti_form(file_name=sub.go_name, type_form="PA",
                                                    result=2)))
    assert poll(inst) == 1
    (sub,) = inst.submissions()
    assert (sub.state, sub.noti_result, sub.noti_provisional) == (journal.NOTIFIED, 1, 0)


@pytest.mark.parametrize("result", [2, 4])
def test_results_other_than_ok_need_attention(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str],
        result: int) -> None:
    inst = make_install(tmp_path, sshd)
    inst.drop("good.xml", sample(1))
    assert inst.run_once() == 0
    (sub,) = inst.submissions()
    assert sub.go_name
    put_set(sshd, "NOTI", 1, notification(noti_form(file_name=sub.go_name, result=result)))
    assert poll(inst) == 1
    (row,) = json.loads(_status(inst, "--json", capsys=capsys))
    assert (row["state"], row["needs_attention"], row["noti_result"]) == (
        "notified", True, result)
    meaning = {2: "proposal to validate", 4: "timeout"}[result]
    assert "!! NOTIFIED" in _status(inst, capsys=capsys) and row["noti_meaning"] == meaning


def _co(body: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("FO.NOTI.999999.20261127.00001.T", body)
    return buffer.getvalue()


def test_co_sets_are_unpacked_beside_and_never_lost(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    inst.drop("good.xml", sample(1))
    assert inst.run_once() == 0
    (sub,) = inst.submissions()
    assert sub.go_name
    body = notification(noti_form(file_name=sub.go_name, result=1))
    good = put_set(sshd, "NOTI", 1, _co(body), kind="CO")
    bad = put_set(sshd, "NOTI", 2, b"not a zip at all", kind="CO")
    with structlog.testing.capture_logs() as logs:
        assert poll(inst) == 2
    inbox = inst.inbox / "test"
    assert (inbox / (good[0] + ".unpacked")).read_bytes() == body
    assert (inbox / bad[0]).read_bytes() == b"not a zip at all"  # delivered as received
    assert not (inbox / (bad[0] + ".unpacked")).exists()
    assert sorted(os.listdir(inbox)) == sorted([*good, *bad, good[0] + ".unpacked"])
    refused = [e for e in logs if e["event"] == "reply_unpack_refused"]
    assert [e["file"] for e in refused] == [bad[0]] and "ZIP" in refused[0]["reason"]
    (sub,) = inst.submissions()
    assert (sub.state, sub.noti_result, sub.noti_name) == (journal.NOTIFIED, 1, good[0])
    out = _status(inst, "--unmatched", capsys=capsys)
    assert "CO.NOTI" in out and bad[0] in out


def test_a_reply_set_seen_before_is_said_once(tmp_path: Path, sshd: SshServer) -> None:
    """A sandbox restarted with a fresh root numbers its replies from 1 again."""
    inst = make_install(tmp_path, sshd)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    assert poll(inst) == 1
    put_set(sshd, "ACRF", 1, acrf("GO.Y"))
    cfg = load(inst.config_path)
    db = Journal(cfg.daemon.state_dir / "journal.sqlite3")
    with SftpChannel(cfg.channels[0].sftp) as transport:
        poller = ReplyPoller(cfg.channels[0], db, transport)
        with structlog.testing.capture_logs() as logs:
            assert poller.poll() == 0
            assert poller.poll() == 0
    db.close()
    seen = [e for e in logs if e["event"] == "reply_set_seen_before"]
    assert len(seen) == 1 and seen[0]["set_key"] == "ACRF.999999.20261127.00001.T"
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(names)  # left on the server


def test_a_journal_of_the_previous_version_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    db = Journal(path)
    sub_id = db.add_received(channel="acme", application="fla", environment="test",
                             drop_name="x.xml", spool_path="/s/x", sha256="a", size=1)
    db.close()
    old = sqlite3.connect(path)
    for column in ("receipt_errors", "receipt_type_form", "noti_type_form",
                   "noti_provisional", "noti_forms"):
        old.execute(f"ALTER TABLE submission DROP COLUMN {column}")
    old.execute("DROP TABLE reply")
    old.execute("DROP TABLE sent_form")
    old.execute("PRAGMA user_version = 0")  # what the previous version's journals say
    old.commit()
    old.close()
    readonly = Journal(path, readonly=True)  # `flad status` beside an older service
    assert [s.id for s in readonly.submissions()] == [sub_id]
    assert readonly.replies(unmatched_only=True) == []
    readonly.close()
    db = Journal(path)
    db.record_reply(channel="acme", folder="OUTTEST", set_key="k", file_name="FO.X",
                    form_index=0, kind="DMNO", submission_id=None, tied_by=None, names={},
                    summary="s")
    sub = db.get(sub_id)
    assert sub is not None and sub.receipt_errors is None and sub.drop_name == "x.xml"
    assert [r["kind"] for r in db.replies(unmatched_only=True)] == ["DMNO"]
    db.close()


def test_a_set_left_delivering_in_its_own_staging_folder_is_finished(
        tmp_path: Path, sshd: SshServer) -> None:
    """A crash of a flad from before issue 20 (one staging folder per set) between
    `delivering` and the last rename: this version finishes it from there, once."""
    inst = make_install(tmp_path, sshd)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    set_key = names[0].split(".", 1)[1]
    legacy = inst.inbox / ".incoming" / f"OUTTEST.{set_key}"
    legacy.mkdir(parents=True)
    for name in names[1:]:  # the FO already moved into the inbox before the crash
        (legacy / name).write_bytes((sshd.root / "OUTTEST" / name).read_bytes())
    (inst.inbox / "test").mkdir(parents=True)
    (inst.inbox / "test" / names[0]).write_bytes(acrf("GO.X"))
    db = Journal(tmp_path / "state" / "journal.sqlite3")
    try:
        db.record_reply_set("acme", "OUTTEST", set_key, names, "delivering")
    finally:
        db.close()
    assert poll(inst) == 1
    assert sorted(os.listdir(inst.inbox / "test")) == sorted(names)
    assert not legacy.exists()
    assert os.listdir(sshd.root / "OUTTEST") == []
    assert poll(inst) == 0
