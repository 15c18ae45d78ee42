"""The mistakes a newcomer makes, and what flad says about them: the path and the fix,
with an exit status that says it failed."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import structlog.testing

from flad import config as config_mod
from flad import journal, strays, xmlcheck
from flad.cli import main
from flad.daemon import Service
from tests import configs
from tests.certs import write_test_signer
from tests.harness import make_install, sample
from tests.replysets import acrf, poll, put_set
from tests.sandboxed import sandboxed_install
from tests.sshd import SshServer
from tests.test_cli import employer_channel, flad, flad_process, write_config


def test_drops_where_no_application_looks_are_named_once(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    inst.drop("good.xml", sample(1))
    inst.drop("q1.xml", sample(2), app="dmfa")      # no dmfa application on this channel
    (inst.outbox / "test" / "loose.xml").write_bytes(sample(3))  # no application folder
    (inst.outbox / "stray.xml").write_bytes(sample(4))           # the outbox itself
    (inst.outbox / "tests" / "fla").mkdir(parents=True)          # misspelt environment
    (inst.outbox / "tests" / "typo.xml").write_bytes(sample(5))
    (inst.outbox / "test" / "dmfa" / ".partial.xml.tmp").write_bytes(b"being written")

    found = {s.folder: s for s in strays.find(inst.config)}
    assert set(found) == {inst.outbox / "test" / "dmfa", inst.outbox / "test",
                          inst.outbox, inst.outbox / "tests"}
    assert found[inst.outbox / "test" / "dmfa"].files == 1  # the temporary one is not counted
    assert "no application 'dmfa'" in found[inst.outbox / "test" / "dmfa"].fix
    assert "[[channel.application]]" in found[inst.outbox / "test" / "dmfa"].fix
    assert "'tests' is not an environment" in found[inst.outbox / "tests"].fix

    done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "10")
    assert done.returncode == 1, done.stdout + done.stderr  # the good file went, the rest did not
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines()
             if line.startswith("{")]
    notices = [line for line in lines if line["event"] == "drop_not_watched"]
    assert sorted(n["path"] for n in notices) == sorted(str(p) for p in found)
    assert [s.drop_name for s in inst.submissions()] == ["good.xml"]
    assert (inst.outbox / "test" / "dmfa" / "q1.xml").exists()  # never read, never moved

    _, out, _ = flad(capsys, "check", "-c", inst.config_path, "--offline")
    warned = [line for line in out.splitlines() if "where flad does not look" in line]
    assert len(warned) == 4, out
    assert any(f"{inst.outbox}/test/dmfa" in line and "no application 'dmfa'" in line
               for line in warned)


def test_notices_say_each_folder_once_until_it_is_emptied(tmp_path: Path) -> None:
    one = strays.Stray("acme", tmp_path / "a", 1, "fix")
    two = strays.Stray("acme", tmp_path / "b", 2, "fix")
    notices = strays.StrayNotices()
    assert notices.new([one]) == [one]
    assert notices.new([one, two]) == [two]
    assert notices.new([two]) == []
    assert notices.new([one, two]) == [one]  # it came back: said again


def test_an_outbox_that_cannot_be_created_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbox's parent should be")
    config = write_config(tmp_path, employer_channel(tmp_path, outbox=blocker / "outbox"))
    code, _, err = flad(capsys, "run", "-c", config, "--once", "--max-wait", "1")
    assert code == 2
    assert f"cannot create the drop folder {blocker}/outbox" in err
    assert "state folder" not in err

    code, out, _ = flad(capsys, "check", "-c", config, "--offline")
    assert code == 1
    assert any(line.startswith("ERROR") and "outbox" in line and str(blocker) in line
               for line in out.splitlines()), out


def test_check_says_where_the_outbox_and_inbox_are_and_if_they_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ch = employer_channel(tmp_path)
    ch["outbox"] = tmp_path / "acme" / "outbx"  # misspelt: it does not exist yet
    Path(ch["inbox"]).mkdir(parents=True)
    config = write_config(tmp_path, ch)
    code, out, _ = flad(capsys, "check", "-c", config, "--offline")
    assert code == 0, out
    assert any(line.startswith("WARNING") and "outbx does not exist yet" in line
               and "mistyped" in line for line in out.splitlines()), out
    assert any(line.startswith("OK") and "inbox" in line and str(ch["inbox"]) in line
               for line in out.splitlines()), out
    assert not (tmp_path / "acme" / "outbx").exists()  # check creates nothing


def test_a_service_start_with_strays_keeps_running(tmp_path: Path, sshd: SshServer) -> None:
    """Strays are a warning for the service: it goes on sending what it can."""
    inst = make_install(tmp_path, sshd)
    inst.drop("q1.xml", sample(2), app="dmfa")
    service = Service(config_mod.load(inst.config_path), once=True, max_wait=5)
    assert service.run() == 1
    assert os.path.exists(inst.outbox / "test" / "dmfa" / "q1.xml")


def test_a_file_that_cannot_be_taken_fails_once_and_names_the_path(tmp_path: Path,
                                                                   sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    dropped = inst.drop("a.xml", sample(1))
    spool = inst.outbox / ".flad-spool"  # the spool lives in the outbox (issue 15)
    spool.mkdir(parents=True, mode=0o700)
    (spool / "test").write_text("a file where the spool's folder should be")
    done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "3")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines()
             if line.startswith("{")]
    failed = [line for line in lines if line["event"] == "claim_failed"]
    assert failed and all(line.get("path") for line in failed), lines
    assert dropped.exists()  # left where it was, for the next run
    assert inst.submissions() == []


def test_status_forgets_a_failure_once_a_later_run_connects(
        tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    good_key = inst.channel["sftp"]["private_key"]
    stranger = configs.ssh_key(tmp_path / "stranger")
    inst.channel["sftp"]["private_key"] = stranger
    inst.rewrite()
    inst.drop("a.xml", sample(1))
    assert inst.run_once(max_wait=3) == 1
    _, out, _ = flad(capsys, "status", "-c", inst.config_path)
    assert "channel acme: FAILED" in out, out

    inst.channel["sftp"]["private_key"] = good_key
    inst.rewrite()
    assert inst.run_once(max_wait=10) == 0
    _, out, _ = flad(capsys, "status", "-c", inst.config_path)
    assert "FAILED" not in out, out
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", out), out  # year and zone


def test_once_waits_for_the_receipts_of_what_it_sent(tmp_path: Path) -> None:
    with sandboxed_install(tmp_path) as (inst, _):
        inst.drop("a.xml", sample(1))
        done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "10",
                            "--wait-replies", "30")
        assert done.returncode == 0, done.stdout + done.stderr
        [sub] = inst.submissions()
        assert sub.state in (journal.ACKNOWLEDGED, journal.NOTIFIED), sub
        assert sub.receipt_result == 1
        assert any(p.name.startswith("GO.ACRF.") for p in (inst.inbox / "test").iterdir())


def test_once_says_when_no_receipt_came(tmp_path: Path, sshd: SshServer) -> None:
    """A plain SFTP server never answers: --wait-replies ends in time, and fails."""
    inst = make_install(tmp_path, sshd)
    inst.drop("a.xml", sample(1))
    done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "10",
                        "--wait-replies", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert '"receipts_missing"' in done.stdout + done.stderr
    assert [s.state for s in inst.submissions()] == [journal.SENT]


def test_wait_replies_goes_with_once(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, employer_channel(tmp_path))
    code, _, err = flad(capsys, "run", "-c", config, "--wait-replies", "5")
    assert code == 2 and "--wait-replies goes with --once" in err


def test_the_readme_openssl_check_works_on_a_cr76_signature(tmp_path: Path) -> None:
    """The commands as README prints them, on an FS in 76-character lines."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(base64 -d[^`]*?)```", readme)
    assert block, "README has no openssl check"
    signer = write_test_signer(tmp_path / "signer")
    data = tmp_path / "FILE"
    data.write_bytes(sample(1))
    fs = tmp_path / "FILE.fs"
    code = main(["sign", "--cert", str(signer.cert_path), "--key", str(signer.key_path),
                 "--line-format", "cr76", str(data), "-o", str(fs)])
    assert code == 0 and b"\r" in fs.read_bytes()
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.group(1)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "Verification successful" in done.stderr
    assert "FLADeclaration" not in done.stdout  # the content is not printed


def test_check_prints_findings_only_and_hints_with_the_real_path(
        tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    done = flad_process("check", "-c", inst.config_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [line for line in (done.stdout + done.stderr).splitlines()
                if line.startswith("{")], done.stdout + done.stderr
    (tmp_path / "known_hosts").unlink()
    done = flad_process("check", "-c", inst.config_path, "--offline")
    assert f"run flad trust-host -c {inst.config_path} acme" in done.stdout


def test_validate_with_an_unknown_application_lists_the_known_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, employer_channel(tmp_path))
    data = tmp_path / "a.xml"
    data.write_bytes(sample(1))
    code, _, err = flad(capsys, "validate", "-c", config, "--app", "dmfa", data)
    assert code == 2, err
    assert "no application 'dmfa'; its applications: fla" in err


@pytest.mark.parametrize(("text", "reason"), [
    ("<FLADeclaration>\n<Hours>7</Hour>\n</FLADeclaration>",
     "line 2, column 16: </Hour> closes <Hours>, which was opened on the same line"),
    ("<FLADeclaration>\n<a>\n</FLADeclaration>",
     "line 3, column 18: </FLADeclaration> closes <a>, which was opened on line 2"),
    ("<FLADeclaration>\n<a>\n", "the file ends inside <a>, opened on line 2"),
    ("<FLADeclaration>\n<Wor\n", "line 3, column 1: Couldn't find end of Start Tag Wor"),
])
def test_a_syntax_reason_says_each_line_once(text: str, reason: str) -> None:
    with pytest.raises(xmlcheck.XmlRejected) as caught:
        xmlcheck.parse_hardened(text.encode())
    assert reason in str(caught.value)
    assert str(caught.value).count("line 2") <= 1


def test_flad_replies_fails_and_names_the_path_when_a_set_cannot_be_delivered(
        tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    inst.inbox.mkdir(parents=True)
    (inst.inbox / "test").write_text("a file where the folder should be")
    done = flad_process("replies", "-c", inst.config_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 reply set(s) not delivered" in done.stderr
    failed = [json.loads(line) for line in (done.stdout + done.stderr).splitlines()
              if line.startswith("{") and "reply_delivery_failed" in line]
    assert failed and failed[0]["path"].startswith(str(inst.inbox)), failed
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(names)  # nothing removed
    (inst.inbox / "test").unlink()
    done = flad_process("replies", "-c", inst.config_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_flad_sandbox_finds_its_stand_in_schema_without_a_repository_path() -> None:
    from flad.sandbox import command

    standin = command._schema_path("standin")
    assert standin is not None and Path(standin).is_file()
    assert xmlcheck.load_schema(Path(standin)) is not None  # a schema, shipped with flad
    assert command._schema_path("none") is None
    assert command._schema_path("/etc/x.xsd") == "/etc/x.xsd"
    assert command._per_code_schemas(["DMFA=/x/DmfA.xsd", "FLAX=standin", "standin"]) == {
        "DMFA": "/x/DmfA.xsd", "FLAX": standin}


def test_a_removal_cut_after_the_go_is_finished_at_the_next_poll(tmp_path: Path,
                                                                 sshd: SshServer) -> None:
    """A kill between removing a delivered set's GO and its data left FO and FS on the
    server for ever (seen once in the random-kill suite)."""
    inst = make_install(tmp_path, sshd)
    names = put_set(sshd, "ACRF", 1, acrf("GO.X"))
    assert poll(inst) == 1
    assert os.listdir(sshd.root / "OUTTEST") == []
    names = put_set(sshd, "ACRF", 2, acrf("GO.Y"), go=False)  # as the cut removal left it
    set_key = ".".join(names[0].split(".")[1:])
    db = journal.Journal(tmp_path / "state" / "journal.sqlite3")
    try:
        db.record_reply_set("acme", "OUTTEST", set_key, names, "delivered")
    finally:
        db.close()
    assert poll(inst) == 0
    assert os.listdir(sshd.root / "OUTTEST") == []
    other = put_set(sshd, "ACRF", 3, acrf("GO.Z"), go=False)  # not delivered: left alone
    assert poll(inst) == 0
    assert sorted(os.listdir(sshd.root / "OUTTEST")) == sorted(other)


def test_trust_host_never_adds_a_second_key_type_in_silence(tmp_path: Path) -> None:
    """The server once showed an RSA key where an Ed25519 one was trusted: trust-host
    added it beside the first without a word."""
    from flad.remote import HostKeyMismatch, add_known_host, fetch_host_key

    known_hosts = tmp_path / "known_hosts"
    with SshServer(host_key_type="rsa") as rsa_server:
        rsa_key = fetch_host_key(rsa_server.host, rsa_server.port, timeout=5)
        port = rsa_server.port
    with SshServer() as ed_server:
        ed_key = fetch_host_key(ed_server.host, ed_server.port, timeout=5)
    add_known_host(known_hosts, "127.0.0.1", port, ed_key)
    with pytest.raises(HostKeyMismatch) as caught:
        add_known_host(known_hosts, "127.0.0.1", port, rsa_key)
    assert "already trusts ssh-ed25519" in str(caught.value)
    assert "showed a ssh-rsa key" in str(caught.value) and "ssh-keygen -R" in str(caught.value)
    assert len(known_hosts.read_text().splitlines()) == 1


def test_trust_host_asks_only_for_the_key_types_it_trusts(tmp_path: Path) -> None:
    from flad.remote import HostKeyMismatch, fetch_host_key

    with SshServer() as server:  # an Ed25519 host key only
        assert fetch_host_key(server.host, server.port, timeout=5,
                              known_types=["ssh-ed25519"]).get_name() == "ssh-ed25519"
        with pytest.raises(HostKeyMismatch, match="offers none of the host key types"):
            fetch_host_key(server.host, server.port, timeout=5, known_types=["ssh-rsa"])


def test_hostile_names_never_reach_the_terminal_raw(tmp_path: Path, sshd: SshServer,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    inst = make_install(tmp_path, sshd)
    evil = "a\n99  acme  test  !! SENT  fake.xml\x1b]0;owned\x07\u202egpj.xml"
    inst.drop(evil, sample(1))
    inst.drop("plain.xml", sample(2))
    assert inst.run_once() == 0
    _, out, _ = flad(capsys, "status", "-c", inst.config_path)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b]0;owned\\x07" in out and "\\u202e" in out and "a\\n99" in out, [out]
    rows = [line for line in out.splitlines() if line[:1].isdigit() and " acme " in line]
    assert len(rows) == 2  # no fake row

    from flad import logs

    stream = io.StringIO()
    logs.configure("console", "info", stream=stream)
    logs.get().warning("file_rejected", drop_name=evil)
    line = stream.getvalue()
    assert line.count("\n") == 1 and "\x1b" not in line and "\\x1b]0;owned" in line


@pytest.mark.parametrize(("days", "level"), [(5, "ERROR"), (20, "WARNING"), (90, None)])
def test_status_heads_with_certificates_near_their_end(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], days: int,
        level: str | None) -> None:
    import datetime as dt

    from tests.certs import issue_cert, make_ca, write_signer

    ca = make_ca()
    cert = issue_cert(ca, "acme signer", not_after=dt.datetime.now(dt.UTC)
                      + dt.timedelta(days=days, hours=1))
    signer = write_signer(tmp_path / "signer", cert, chain=[ca.certificate])
    ch = employer_channel(tmp_path, signing={"certificate": signer.cert_path,
                                             "private_key": signer.key_path})
    config = write_config(tmp_path, ch)
    (tmp_path / "state").mkdir()
    journal.Journal(tmp_path / "state" / "journal.sqlite3").close()
    _, out, _ = flad(capsys, "status", "-c", config)
    first = out.splitlines()[0]
    if level is None:
        assert "certificate" not in out
    else:
        assert first.startswith(f"{level}: channel acme: the signing certificate")
        assert f"in {days} day(s): renew it" in first


def test_a_reply_another_client_took_skips_its_set_only(tmp_path: Path,
                                                        sshd: SshServer) -> None:
    """Issue 16: a remote 'not found' while downloading (another process took the set)
    used to fail the whole channel; it skips that set for this poll."""
    from flad.channel.replies import ReplyPoller
    from flad.remote import SftpChannel, TransportError

    inst = make_install(tmp_path, sshd)
    taken = put_set(sshd, "ACRF", 1, acrf("GO.A"))
    kept = put_set(sshd, "ACRF", 2, acrf("GO.B"))

    class Racing(SftpChannel):
        def listdirs(self, remote_dirs: Sequence[str]
                     ) -> list[list[tuple[str, int]] | TransportError]:
            listings = super().listdirs(remote_dirs)
            for name in taken:  # the other client takes the set right after the listing
                (sshd.root / "OUTTEST" / name).unlink(missing_ok=True)
            return listings

    cfg = config_mod.load(inst.config_path)
    db = journal.Journal(cfg.daemon.state_dir / "journal.sqlite3")
    transport = Racing(cfg.channels[0].sftp)
    try:
        with structlog.testing.capture_logs() as logged:
            assert ReplyPoller(cfg.channels[0], db, transport).poll() == 1
    finally:
        transport.close()
        db.close()
    assert any(e["event"] == "reply_vanished" for e in logged)
    assert sorted(os.listdir(inst.inbox / "test")) == sorted(kept)
    assert os.listdir(sshd.root / "OUTTEST") == []


def test_a_drop_does_not_wait_for_a_long_reply_poll(tmp_path: Path, sshd: SshServer) -> None:
    """Issue 20: uploads waited behind the whole poll; now they go between its slices."""
    from tests.harness import Running, wait_for

    inst = make_install(tmp_path, sshd, production=True)
    for n in range(1, 401):
        put_set(sshd, "ACRF", n, acrf(f"GO.X{n}"))
    inst.drop("urgent.xml", sample(1), env="production")
    with Running(inst):
        wait_for(lambda: any(n.startswith("GO.") for n in os.listdir(sshd.root / "IN")),
                 60, "the GO of the dropped file")
        left = len(os.listdir(sshd.root / "OUTTEST"))
        wait_for(lambda: not os.listdir(sshd.root / "OUTTEST"), 120, "every reply set")
    assert left > 0, "the upload waited for the whole poll"


@pytest.mark.parametrize(("days", "level"), [(5, "error"), (20, "warning")])
def test_the_service_says_when_a_certificate_nears_its_end(
        tmp_path: Path, sshd: SshServer, days: int, level: str) -> None:
    import datetime as dt

    from tests.certs import issue_cert, make_ca, write_signer

    inst = make_install(tmp_path, sshd)
    ca = make_ca()
    cert = issue_cert(ca, "acme signer", not_after=dt.datetime.now(dt.UTC)
                      + dt.timedelta(days=days, hours=1))
    signer = write_signer(tmp_path / "short", cert, chain=[ca.certificate])
    inst.rewrite(signing={"certificate": signer.cert_path, "private_key": signer.key_path})
    with structlog.testing.capture_logs() as logged:
        assert inst.run_once(max_wait=5) == 0
    said = [e for e in logged if e["event"] == "certificate_expiring"]
    assert [(e["log_level"], e["role"], round(e["days_left"])) for e in said] == [
        (level, "signing", days)]
    assert f"in {days} day(s): renew it" in said[0]["message"]
