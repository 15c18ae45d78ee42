"""The service end to end against a real OpenSSH server: drop, claim, check, send."""

from __future__ import annotations

import datetime
import os
import signal
import threading
import time
from pathlib import Path

from structlog.testing import capture_logs

from flad import journal, naming, signing
from tests.harness import Running, make_install, sample, wait_for
from tests.sshd import SshServer

TODAY = datetime.date.today().strftime("%Y%m%d")


def test_production_drop_becomes_fi_fs_go_in_order(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd, production=True)
    for i in range(3):
        inst.drop(f"decl-{i}.xml", sample(i), env="production")
    assert inst.run_once() == 0

    names = inst.remote("IN")
    assert names == sorted(
        f"{t}.FLAX.006400.{TODAY}.{seq:05d}.R.{suffix}"
        for seq in (1, 2, 3) for t, suffix in (("FI", "1.1"), ("FS", "1.1"), ("GO", "1")))
    assert inst.remote("INTEST") == []
    cert = signing.load_certificates(inst.signer.cert_path)[0]
    subs = inst.submissions()
    assert [s.state for s in subs] == [journal.SENT] * 3
    for sub in subs:
        assert sub.fi_name and sub.fs_name and sub.go_name
        fi = (sshd.root / "IN" / sub.fi_name).read_bytes()
        assert fi == sample(int(sub.drop_name[5]))  # exact bytes, nothing re-encoded
        signing.verify_fs(fi, (sshd.root / "IN" / sub.fs_name).read_bytes(), certificate=cert)
        assert (sshd.root / "IN" / sub.go_name).stat().st_size == 0
        # archived locally by sent name; the outbox is empty again
        assert (inst.outbox / "sent" / "production" / sub.fi_name).read_bytes() == fi
        assert (inst.outbox / "sent" / "production" / sub.fs_name).exists()
    assert list((inst.outbox / "production" / "fla").iterdir()) == []

    ops = sshd.sftp_operations()
    for sub in subs:
        closes = [i for i, (op, path) in enumerate(ops) if op == "close"]
        assert closes
        fi_done = max(i for i, (op, p) in enumerate(ops) if op == "close" and sub.fi_name in p)
        fs_done = max(i for i, (op, p) in enumerate(ops) if op == "close" and sub.fs_name in p)
        go_open = min(i for i, (op, p) in enumerate(ops) if op == "open" and sub.go_name in p)
        assert fi_done < go_open and fs_done < go_open, ops
    assert sshd.connection_count() == 1


def test_test_files_go_to_intest_without_fs(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    inst.drop("a.xml", sample(1))
    assert inst.run_once() == 0
    assert inst.remote("INTEST") == [f"FI.FLAX.006400.{TODAY}.00001.T.1.1",
                                     f"GO.FLAX.006400.{TODAY}.00001.T.1"]
    assert inst.remote("IN") == []


def test_sign_test_files_adds_fs_in_intest(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd, sign_test_files=True)
    inst.drop("a.xml", sample(1))
    assert inst.run_once() == 0
    assert f"FS.FLAX.006400.{TODAY}.00001.T.1.1" in inst.remote("INTEST")


def test_many_files_share_one_ssh_connection(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    for i in range(25):
        inst.drop(f"f{i:02d}.xml", sample(i))
    assert inst.run_once() == 0
    assert len([n for n in inst.remote() if n.startswith("GO.")]) == 25
    assert sshd.connection_count() == 1
    seqs = sorted(s.sequence or "" for s in inst.submissions())
    assert seqs == [naming.sequence_for(i) for i in range(1, 26)]


def test_invalid_files_are_rejected_with_a_reason(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    inst.drop("broken.xml", b"<FLADeclaration><oops></FLADeclaration>")
    inst.drop("other-company.xml", sample(2).replace(b"0123456749</EmployerId>",
                                                     b"0202239951</EmployerId>"))
    inst.drop("good.xml", sample(3))
    assert inst.run_once() == 0
    rejected = inst.outbox / "rejected" / "test" / "fla"
    assert sorted(p.name for p in rejected.iterdir()) == [
        "broken.xml", "broken.xml.reason.txt", "other-company.xml",
        "other-company.xml.reason.txt"]
    reason = (rejected / "broken.xml.reason.txt").read_text()
    assert reason.count("\n") == 1 and "line 1" in reason
    assert "0202239951" in (rejected / "other-company.xml.reason.txt").read_text()
    states = {s.drop_name: s.state for s in inst.submissions()}
    assert states == {"broken.xml": "rejected", "other-company.xml": "rejected",
                      "good.xml": "sent"}
    assert len([n for n in inst.remote() if n.startswith("GO.")]) == 1


def test_a_refusal_stands_when_the_rejected_folder_cannot_be_written(
    tmp_path: Path, sshd: SshServer
) -> None:
    """The journal keeps the refusal and its reason at once; the file waits in the
    spool, is not checked again, and is moved once the folder can be written."""
    inst = make_install(tmp_path, sshd)
    blocked = inst.outbox / "rejected" / "test" / "fla"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the folder should be")  # fails even as root
    inst.drop("broken.xml", b"<FLADeclaration><oops></FLADeclaration>")
    with capture_logs() as logs:
        assert inst.run_once(max_wait=5) == 0
    (sub,) = inst.submissions()
    assert sub.state == journal.REJECTED and sub.error and "line 1" in sub.error
    assert Path(sub.spool_path).read_bytes() == b"<FLADeclaration><oops></FLADeclaration>"
    checks = [e for e in logs if e["event"] == "file_rejected"]
    assert len(checks) == 1  # refused once, not at every turn of the worker
    (unmoved,) = [e for e in logs if e["event"] == "rejected_file_not_moved"]
    assert unmoved["submission"] == sub.id and "next start" in unmoved["action"]

    blocked.unlink()
    assert inst.run_once(max_wait=5) == 0
    assert (blocked / "broken.xml").read_bytes() == b"<FLADeclaration><oops></FLADeclaration>"
    assert (blocked / "broken.xml.reason.txt").read_text() == sub.error + "\n"
    assert not Path(sub.spool_path).exists()


def test_production_refused_when_not_allowed(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd, production=False)
    inst.drop("prod.xml", sample(1), env="production")
    assert inst.run_once() == 0
    reason = (inst.outbox / "rejected" / "production" / "fla" / "prod.xml.reason.txt")
    assert "may not send production files" in reason.read_text()
    assert inst.remote("IN") == [] and inst.remote("INTEST") == []


def test_duplicate_is_refused_then_resent_on_request(tmp_path: Path, sshd: SshServer) -> None:
    from flad.cli import main

    inst = make_install(tmp_path, sshd)
    inst.drop("a.xml", sample(1))
    assert inst.run_once() == 0
    inst.drop("a-again.xml", sample(1))
    inst.drop("a-prod.xml", sample(1), env="production")  # refused: production not allowed
    assert inst.run_once() == 0
    dup = next(s for s in inst.submissions() if s.drop_name == "a-again.xml")
    first = next(s for s in inst.submissions() if s.drop_name == "a.xml")
    assert dup.state == journal.REJECTED
    assert dup.error and f"already sent as {first.fi_name}" in dup.error
    assert f"flad resend -c {inst.config_path} {dup.id}" in dup.error

    assert main(["resend", "-c", str(inst.config_path), str(dup.id)]) == 0
    assert inst.run_once() == 0
    again = next(s for s in inst.submissions() if s.id == dup.id)
    assert again.state == journal.SENT and again.fi_name != first.fi_name
    assert len([n for n in inst.remote() if n.startswith("GO.")]) == 2


def test_same_content_to_test_then_production_is_allowed(tmp_path: Path,
                                                          sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd, production=True)
    inst.drop("a.xml", sample(1), env="test")
    assert inst.run_once() == 0
    inst.drop("a.xml", sample(1), env="production")
    assert inst.run_once() == 0
    assert [s.state for s in inst.submissions()] == [journal.SENT, journal.SENT]


def test_special_entries_are_refused_without_being_opened(tmp_path: Path,
                                                           sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    folder = inst.outbox / "test" / "fla"
    folder.mkdir(parents=True)
    secret = tmp_path / "secret.xml"
    secret.write_bytes(sample(9))
    (folder / "link.xml").symlink_to(secret)
    os.mkfifo(folder / "pipe.xml")  # opening it for reading would block the service
    (folder / "a-folder").mkdir()
    (folder / ".hidden.xml").write_bytes(sample(1))
    (folder / "partial.xml.part").write_bytes(sample(2))
    assert inst.run_once(max_wait=5) == 0
    rejected = inst.outbox / "rejected" / "test" / "fla"
    assert (rejected / "link.xml").is_symlink()
    assert "symbolic link" in (rejected / "link.xml.reason.txt").read_text()
    assert "named pipe" in (rejected / "pipe.xml.reason.txt").read_text()
    assert "folder" in (rejected / "a-folder.reason.txt").read_text()
    assert (folder / ".hidden.xml").exists() and (folder / "partial.xml.part").exists()
    assert inst.remote() == []
    assert secret.read_bytes() == sample(9)


def test_rename_drop_is_taken_at_once_and_slow_writer_only_when_done(
        tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd, settle_seconds=1.0, rescan_seconds=30)
    folder = inst.outbox / "test" / "fla"
    with Running(inst):
        wait_for(lambda: folder.is_dir(), what="drop folders")
        time.sleep(0.3)  # the watcher is up
        started = time.monotonic()
        inst.drop("quick.xml", sample(1))
        wait_for(lambda: any(n.startswith("GO.") for n in inst.remote()), 10, "first GO")
        assert time.monotonic() - started < 1.0  # did not wait for settle_seconds

        data = sample(2, size=300_000)

        def slow_writer() -> None:
            with open(folder / "slow.xml", "wb") as f:
                for i in range(0, len(data), 30_000):
                    f.write(data[i:i + 30_000])
                    f.flush()
                    time.sleep(0.25)

        writer = threading.Thread(target=slow_writer)
        writer.start()
        wait_for(lambda: len([n for n in inst.remote() if n.startswith("GO.")]) == 2, 20,
                 "second GO")
        writer.join()
    sub = next(s for s in inst.submissions() if s.drop_name == "slow.xml")
    assert sub.fi_name and (sshd.root / "INTEST" / sub.fi_name).read_bytes() == data


def test_server_down_at_start_then_up(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    sshd.stop()
    inst.drop("a.xml", sample(1))
    with Running(inst):
        db = inst.journal()
        wait_for(lambda: any(c.state == "retrying" for c in db.channel_states()), 10,
                 "a retry")
        (channel,) = db.channel_states()
        assert channel.error and "connection refused" in channel.error
        wait_for(lambda: db.submissions(), 10, "the claim")
        assert db.submissions()[0].state in (journal.RECEIVED, journal.PREPARED)
        db.close()
        sshd.start()
        wait_for(lambda: inst.submissions()[0].state == journal.SENT, 20, "sent")
    assert len([n for n in inst.remote() if n.startswith("GO.")]) == 1


def test_connection_dropped_mid_upload_resumes_and_sends_go_once(
        tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd, poll_seconds=3600)
    big = sample(2, size=40_000_000)
    with Running(inst):
        inst.drop("small.xml", sample(1))
        wait_for(lambda: any(n.startswith("GO.") for n in inst.remote()), 10, "first GO")
        # the server stops answering in the middle of the next upload, then dies
        assert sshd.signal_sessions(signal.SIGSTOP) >= 1
        inst.drop("big.xml", big)
        wait_for(lambda: any(s.upload_step == "data" for s in inst.submissions()), 10,
                 "the FI upload")
        time.sleep(0.5)
        assert sum(n.startswith("GO.") for n in inst.remote()) == 1
        assert sshd.kill_sessions() >= 1
        wait_for(lambda: all(s.state == journal.SENT for s in inst.submissions()), 40,
                 "both sent")
    sub = next(s for s in inst.submissions() if s.drop_name == "big.xml")
    assert sub.fi_name and (sshd.root / "INTEST" / sub.fi_name).read_bytes() == big
    go_opens = [p for op, p in sshd.sftp_operations() if op == "open" and "GO." in p]
    assert len(go_opens) == 2  # one per submission, none repeated
    assert sshd.connection_count() == 2


def test_changed_host_key_is_refused_and_nothing_sent(tmp_path: Path,
                                                       sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    sshd.replace_host_key()
    inst.drop("a.xml", sample(1))
    assert inst.run_once(max_wait=5) == 1
    assert inst.remote() == []
    db = inst.journal()
    (channel,) = db.channel_states()
    assert channel.state == "failed" and channel.error
    assert "host key" in channel.error.lower()
    assert db.submissions()[0].state == journal.PREPARED  # kept for the next run
    db.close()


def test_spool_on_another_file_system_is_claimed_by_copy(tmp_path: Path,
                                                         sshd: SshServer) -> None:
    """state_dir on its own tmpfs, as the unit's StateDirectory= mount: the claim is still
    one rename, the spool being in the outbox (issue 15); the copy across mounts is
    tried in tests/faults/test_hostile_users.py, under a bind mount."""
    import subprocess

    import pytest

    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(state)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        inst = make_install(tmp_path, sshd)
        assert os.stat(state).st_dev != os.stat(tmp_path).st_dev
        inst.drop("a.xml", sample(1))
        assert inst.run_once() == 0
        (sub,) = inst.submissions()
        assert sub.state == journal.SENT and sub.fi_name
        assert (sshd.root / "INTEST" / sub.fi_name).read_bytes() == sample(1)
        assert list((inst.outbox / "test" / "fla").iterdir()) == []
        assert not [p for p in state.rglob("*.partial")]
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True)


def test_one_stuck_channel_never_stops_another(tmp_path: Path, sshd: SshServer) -> None:
    from flad.daemon import Service
    from tests import configs

    inst = make_install(tmp_path, sshd)
    dead = configs.channel(tmp_path, "dead", quality="training_provider", port=1,
                           username="EXP_DEAD")
    dead["sftp"]["connect_timeout"] = 1
    configs.write(tmp_path, [inst.channel, dead], **(inst.daemon or {}))
    inst.drop("a.xml", sample(1))
    (tmp_path / "dead" / "outbox" / "test" / "fla").mkdir(parents=True)
    (tmp_path / "dead" / "outbox" / "test" / "fla" / "b.xml").write_bytes(sample(2))
    with Running(inst):
        wait_for(lambda: any(n.startswith("GO.") for n in inst.remote()), 15, "GO")
        db = inst.journal()
        wait_for(lambda: any(c.channel == "dead" and c.state == "retrying"
                             for c in db.channel_states()), 15, "the dead channel retrying")
        db.close()
    states = {s.channel: s.state for s in inst.submissions()}
    assert states == {"acme": journal.SENT, "dead": journal.PREPARED}
    assert Service(inst.config, once=True, max_wait=2).run() == 1  # still queued: exit 1
