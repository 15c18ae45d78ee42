"""Batches end to end: many files at once, identical files at once, a GO never stat'ed,
many small requests in one put, and the unsynced FS beside a spooled file after a crash.

Everything runs against the real OpenSSH server of the `sshd` fixture.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from flad import journal, naming, signing
from flad.channel.worker import BATCH_FILES
from flad.journal import Submission
from flad.outbox import BIG_FILE_BYTES
from flad.remote import RemotePermissionDenied, SftpChannel, SftpSettings, TransportError
from tests.harness import Install, Running, make_install, sample, wait_for
from tests.sshd import SshServer

REMOTE = {"test": "INTEST", "production": "IN"}
FINAL = (journal.SENT, journal.REJECTED, journal.FAILED)


def drop_together(inst: Install, files: dict[str, bytes], env: str = "test") -> None:
    """Write every file under a temporary name first, then rename them one after the
    other: the whole drop lands in the folder within a few milliseconds."""
    folder = inst.outbox / env / "fla"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / f".{name}.tmp").write_bytes(data)
    for name in files:
        os.rename(folder / f".{name}.tmp", folder / name)


def fs_sidecar(sub: Submission) -> Path:
    spool = Path(sub.spool_path)
    return spool.with_name(f".{spool.name}.fs")


def spool_files(inst: Install) -> list[Path]:
    spool = inst.outbox / ".flad-spool"  # the spool lives in the outbox (issue 15)
    return sorted(p for p in spool.rglob("*") if p.is_file()) if spool.exists() else []


def settings_for(server: SshServer, tmp_path: Path) -> SftpSettings:
    known_hosts = server.write_known_hosts(tmp_path / "known_hosts")
    return SftpSettings(host=server.host, port=server.port, username=server.username,
                        private_key=server.client_key_path, passphrase=None,
                        known_hosts=known_hosts, connect_timeout=5.0, request_timeout=5.0)


# -- identical files dropped together --------------------------------------------------

@pytest.mark.parametrize(("env", "size"), [
    ("test", 0), ("production", 0),
    # big files are hashed by the check, not the claim: the journal learns the hash
    # only when numbering them, in the same transaction as the duplicate check
    ("test", BIG_FILE_BYTES + 4096), ("production", BIG_FILE_BYTES + 4096),
])
def test_identical_files_dropped_together_are_sent_once(tmp_path: Path, sshd: SshServer,
                                                        env: str, size: int) -> None:
    inst = make_install(tmp_path, sshd, production=True)
    pairs = 2 if size else 4
    files: dict[str, bytes] = {}
    for i in range(pairs):  # interleaved: each copy sits right beside its twin
        files[f"a{i}.xml"] = sample(100 + i, size)
        files[f"b{i}.xml"] = sample(100 + i, size)
    with capture_logs() as logs, Running(inst):
        wait_for(lambda: (inst.outbox / env / "fla").is_dir(), what="drop folders")
        drop_together(inst, files, env)
        wait_for(lambda: len(inst.submissions()) == 2 * pairs
                 and all(s.state in FINAL for s in inst.submissions()), 30,
                 "every copy sent or refused")
    subs = inst.submissions()
    folder = sshd.root / REMOTE[env]
    rejected_dir = inst.outbox / "rejected" / env / "fla"
    for i in range(pairs):
        twins = [s for s in subs if s.drop_name in (f"a{i}.xml", f"b{i}.xml")]
        assert sorted(s.state for s in twins) == [journal.REJECTED, journal.SENT], twins
        (sent,) = [s for s in twins if s.state == journal.SENT]
        (dup,) = [s for s in twins if s.state == journal.REJECTED]
        assert sent.fi_name and sent.go_name and dup.fi_name is None
        assert dup.sequence is None  # the refused copy took no number
        assert (folder / sent.fi_name).read_bytes() == sample(100 + i, size)
        assert (folder / sent.go_name).exists()
        digest = hashlib.sha256(sample(100 + i, size)).hexdigest()
        assert sent.sha256 == dup.sha256 == digest
        assert dup.error is not None
        assert f"the same content was already sent as {sent.fi_name}" in dup.error
        assert f"(submission {sent.id})" in dup.error
        assert f"flad resend -c {inst.config_path} {dup.id}" in dup.error
        assert (rejected_dir / dup.drop_name).read_bytes() == sample(100 + i, size)
        reason = (rejected_dir / f"{dup.drop_name}.reason.txt").read_text()
        assert reason == dup.error + "\n"
        assert dup.rejected_path == str(rejected_dir / dup.drop_name)
    # one GO per content, each opened once; one FI per content
    go_opens = [p for op, p in sshd.sftp_operations() if op == "open" and "/GO." in p]
    assert len(go_opens) == pairs and len(set(go_opens)) == pairs
    assert sum(n.startswith("FI.") for n in os.listdir(folder)) == pairs
    assert sum(n.startswith("FS.") for n in os.listdir(folder)) == (
        pairs if env == "production" else 0)
    seqs = sorted(s.sequence or "" for s in subs if s.sequence)
    assert seqs == [naming.sequence_for(n) for n in range(1, pairs + 1)]
    assert spool_files(inst) == []  # no FS of a refused copy left behind in the spool
    claimed = {e["drop_name"]: e["sha256"] for e in logs if e["event"] == "file_claimed"}
    prepared = {e["drop_name"]: e["sha256"] for e in logs if e["event"] == "submission_prepared"}
    for sub in subs:
        # hashed when taken, big or small (issue 15): every later read is compared with it
        assert claimed[sub.drop_name] == sub.sha256
        if sub.state == journal.SENT:
            assert prepared[sub.drop_name] == sub.sha256


# -- a drop of many files --------------------------------------------------------------

def test_seventy_files_dropped_at_once_go_in_batches(tmp_path: Path, sshd: SshServer) -> None:
    count = 70
    inst = make_install(tmp_path, sshd, production=True)
    files = {f"f{i:03d}.xml": sample(i) for i in range(count)}
    with capture_logs() as logs, Running(inst):
        wait_for(lambda: (inst.outbox / "production" / "fla").is_dir(), what="drop folders")
        drop_together(inst, files, "production")
        wait_for(lambda: len(inst.submissions()) == count
                 and all(s.state in FINAL for s in inst.submissions())
                 and not spool_files(inst), 45, "every file sent and archived")
    subs = inst.submissions()
    assert [s.state for s in subs] == [journal.SENT] * count
    assert sorted(s.drop_name for s in subs) == sorted(files)
    assert sorted(s.sequence or "" for s in subs) == [
        naming.sequence_for(n) for n in range(1, count + 1)]

    remote = sshd.root / "IN"
    names = os.listdir(remote)
    assert Counter(n[:2] for n in names) == {"FI": count, "FS": count, "GO": count}
    assert sorted(names) == sorted(
        n for s in subs for n in (s.fi_name, s.fs_name, s.go_name) if n)
    cert = signing.load_certificates(inst.signer.cert_path)[0]
    sent_dir = inst.outbox / "sent" / "production"
    for sub in subs:
        assert sub.fi_name and sub.fs_name and sub.go_name
        fi = (remote / sub.fi_name).read_bytes()
        assert fi == files[sub.drop_name]
        signing.verify_fs(fi, (remote / sub.fs_name).read_bytes(), certificate=cert)
        assert (remote / sub.go_name).stat().st_size == 0
        assert (sent_dir / sub.fi_name).read_bytes() == fi
        signing.verify_fs(fi, (sent_dir / sub.fs_name).read_bytes(), certificate=cert)
    assert list((inst.outbox / "production" / "fla").iterdir()) == []

    # each GO left only after its own FI and FS were closed on the server
    ops = sshd.sftp_operations()
    last_close = {p: i for i, (op, p) in enumerate(ops) if op == "close"}
    first_open: dict[str, int] = {}
    for i, (op, p) in enumerate(ops):
        if op == "open":
            first_open.setdefault(p, i)
    for sub in subs:
        go = first_open[f"IN/{sub.go_name}"]
        assert last_close[f"IN/{sub.fi_name}"] < go and last_close[f"IN/{sub.fs_name}"] < go
    go_opens = Counter(p for op, p in ops if op == "open" and p.startswith("IN/GO."))
    assert set(go_opens.values()) == {1}
    assert sshd.connection_count() == 1

    # the log: one upload_started per submission, naming its batch; batches happened
    # (at most BATCH_FILES each); one go_sent per submission
    started = [e for e in logs if e["event"] == "upload_started"]
    assert sorted(e["submission"] for e in started) == sorted(s.id for s in subs)
    batches = [int(e["batch"]) for e in started]
    assert max(batches) > 1, f"no batch: {batches}"
    assert max(batches) <= BATCH_FILES
    go_sent = [e for e in logs if e["event"] == "go_sent"]
    assert sorted(e["submission"] for e in go_sent) == sorted(s.id for s in subs)
    by_id = {s.id: s for s in subs}
    batch_of = {e["submission"]: e["batch"] for e in started}
    for e in go_sent:
        assert e["go_name"] == by_id[e["submission"]].go_name
        assert e["batch"] == batch_of[e["submission"]]


# -- put_files: GO without stat, many small requests -----------------------------------

def test_a_go_is_not_stated_after_its_close(tmp_path: Path) -> None:
    """sftp-server -P stat,lstat refuses every stat: a GO must still go, since the
    platform may take a GO (and remove it) as soon as it is closed."""
    with (
        SshServer(sftp_server_options=("-P", "stat,lstat")) as server,
        SftpChannel(settings_for(server, tmp_path)) as ch,
    ):
        go = "INTEST/GO.FLAX.006400.20261127.00001.T.1"
        assert ch.put_bytes(b"", go) == 0
        assert (server.root / go).is_file() and (server.root / go).stat().st_size == 0
        gos = [f"INTEST/GO.FLAX.006400.20261127.{n:05d}.T.1" for n in range(2, 34)]
        assert ch.put_files([(b"", g) for g in gos]) == [0] * len(gos)  # a batch of GOs
        assert all((server.root / g).is_file() for g in gos)

        # a file with content is checked by its remote size, which needs the stat: the
        # reason says it was the size that was refused, not the write
        refused = r"written and closed, but the server would not give its size"
        with pytest.raises(RemotePermissionDenied, match=r"put INTEST/FI\.x on .*" + refused):
            ch.put_bytes(b"<x/>", "INTEST/FI.x")
        with pytest.raises(RemotePermissionDenied, match=r"put INTEST/FI\.y on .*" + refused):
            ch.put_files([(b"<y/>", "INTEST/FI.y"), (b"", "INTEST/GO.y")])
        assert ch.is_connected  # a refused request leaves the session up
        assert ch.put_bytes(b"", "INTEST/GO.after") == 0
        # the server refused exactly the two stats of the files with content, nothing else
        assert server.log_text().count("sent status Permission denied") == 2
        assert (server.root / "INTEST" / "FI.x").read_bytes() == b"<x/>"  # written whole


def test_many_small_files_in_one_put_files_all_arrive_whole(tmp_path: Path,
                                                            sshd: SshServer) -> None:
    # sizes around the coalescing threshold (16 KiB) and the write size (32 KiB), and
    # empty files, so held requests, flushed batches and direct writes interleave
    sizes = [0, 1, 100, 4_000, 16_383, 16_384, 16_385, 20_000, 32_768, 40_000]
    items: list[tuple[Path | bytes, str]] = []
    expected: dict[str, bytes] = {}
    for n in range(100):
        data = os.urandom(sizes[n % len(sizes)] + (n // len(sizes)))
        remote = f"INTEST/FI.TEST.000001.20260101.{n + 1:05d}.T.1.1"
        if n % 7 == 3:  # some from local files, the rest from memory
            local = tmp_path / f"local{n}"
            local.write_bytes(data)
            items.append((local, remote))
        else:
            items.append((data, remote))
        expected[remote] = data
    with capture_logs() as logs, SftpChannel(settings_for(sshd, tmp_path)) as ch:
        sizes_back = ch.put_files(items)
        assert ch.size(items[-1][1]) == len(expected[items[-1][1]])  # the client works on
    assert sizes_back == [len(expected[r]) for _, r in items]
    for remote, data in expected.items():
        assert (sshd.root / remote).read_bytes() == data, remote
    opened = [p for op, p in sshd.sftp_operations() if op == "open"]
    assert sorted(opened) == sorted(expected)  # each opened once
    (put,) = [e for e in logs if e["event"] == "sftp_put"]
    assert put["files"] == 100 and put["bytes"] == sum(len(d) for d in expected.values())
    assert sshd.connection_count() == 1


def test_a_failed_batch_leaves_the_session_usable(tmp_path: Path, sshd: SshServer) -> None:
    """A refused open in the middle of a batch raises; held requests are not left behind
    and paramiko's own writes are back (a later stat or put answers)."""
    with SftpChannel(settings_for(sshd, tmp_path)) as ch:
        items: list[tuple[Path | bytes, str]] = [
            (f"<x>{n}</x>".encode(), f"INTEST/ok{n}") for n in range(10)]
        items.insert(5, (b"<x/>", "NOFOLDER/bad"))
        with pytest.raises(TransportError, match="NOFOLDER/bad"):
            ch.put_files(items)
        assert ch.is_connected
        assert ch.size("INTEST/absent") is None
        assert ch.put_files([(b"again", "INTEST/again"), (b"", "INTEST/GO.again")]) == [5, 0]
        assert ch.size("INTEST/again") == 5
    assert (sshd.root / "INTEST" / "again").read_bytes() == b"again"


# -- the FS beside a spooled file, after a crash ---------------------------------------

def tear(sidecars: list[Path]) -> None:
    """What a machine crash may leave of an unsynced file: cut, zeroed, or empty."""
    for n, path in enumerate(sidecars):
        whole = path.read_bytes()
        assert whole
        kind = n % 3
        if kind == 0:
            path.write_bytes(whole[: len(whole) // 2])
        elif kind == 1:
            path.write_bytes(b"\0" * len(whole))
        else:
            path.write_bytes(b"")


def run_until_crash(inst: Install, point: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAD_FAULT")}
    env["FLAD_FAULT_POINT"] = point
    proc = subprocess.run([sys.executable, "-m", "flad.cli", "run", "--once", "-c",
                           str(inst.config_path), "--max-wait", "15"], env=env,
                          capture_output=True, timeout=60)
    return proc.returncode


@pytest.mark.parametrize("stop", ["server_down", "before_fi", "before_go", "after_go"])
def test_a_torn_fs_beside_the_spool_is_made_again(tmp_path: Path, sshd: SshServer,
                                                  stop: str) -> None:
    """The FS is written next to the spooled file without a sync. After a restart the
    service must never upload or archive a torn one: it checks it against the FI and
    signs again. `stop` is where the first run ended: the server unreachable (files
    `prepared`), or a SIGKILL at a crash point (files `uploading`)."""
    inst = make_install(tmp_path, sshd, production=True)
    count = 3
    for i in range(count):
        inst.drop(f"d{i}.xml", sample(i), env="production")
    if stop == "server_down":
        sshd.stop()
        assert inst.run_once(max_wait=4) == 1
        sshd.start()
    else:
        assert run_until_crash(inst, stop) == -9
    subs = inst.submissions()
    stopped = [s for s in subs if s.state in (journal.PREPARED, journal.UPLOADING)]
    assert stopped, [(s.drop_name, s.state) for s in subs]
    if stop == "server_down":
        assert {s.state for s in subs} == {journal.PREPARED}
    else:  # the crashed batch; files numbered after it may wait as `prepared`
        uploading = [s for s in stopped if s.state == journal.UPLOADING]
        want = "go" if stop == "after_go" else "data"
        assert uploading and {s.upload_step for s in uploading} == {want}
    sidecars = [fs_sidecar(s) for s in stopped]
    assert all(p.is_file() for p in sidecars)
    tear(sidecars)

    with capture_logs() as logs:
        assert inst.run_once() == 0

    cert = signing.load_certificates(inst.signer.cert_path)[0]
    subs = inst.submissions()
    assert [s.state for s in subs] == [journal.SENT] * count
    sent_dir = inst.outbox / "sent" / "production"
    for sub in subs:
        assert sub.fi_name and sub.fs_name
        fi = (sshd.root / "IN" / sub.fi_name).read_bytes()
        assert fi == sample(int(sub.drop_name[1]))
        signing.verify_fs(fi, (sshd.root / "IN" / sub.fs_name).read_bytes(), certificate=cert)
        assert (sent_dir / sub.fi_name).read_bytes() == fi
        archived = (sent_dir / sub.fs_name).read_bytes()
        try:
            signing.verify_fs(fi, archived, certificate=cert)
        except signing.SignatureInvalid as exc:
            pytest.fail(f"{sub.drop_name} ({sub.fs_name}): the archived FS does not sign "
                        f"the FI: {exc} ({len(archived)} bytes archived)")
    assert spool_files(inst) == []
    go_opens = Counter(p for op, p in sshd.sftp_operations()
                       if op == "open" and p.startswith("IN/GO."))
    assert sorted(go_opens) == sorted(f"IN/{s.go_name}" for s in subs)
    assert set(go_opens.values()) == {1}  # no GO twice
    # every torn FS that had to be uploaded again was signed again (a GO already on the
    # server needs no upload: its FS reached the server from memory before the crash)
    made_again = {e["submission"] for e in logs if e["event"] == "signature_made_again"}
    assert made_again >= {s.id for s in stopped if s.upload_step != "go"}
