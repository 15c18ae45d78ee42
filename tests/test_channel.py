"""The channel's own parts: the content store, the one-by-one rule, recovery, and the
journal-first refusal of entries that are not regular files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from flad import journal, signing
from flad.channel import recovery
from flad.channel.retry import OutOfTime, RetryPolicy, is_transient, one_by_one
from flad.channel.store import ContentStore
from flad.remote import PermanentTransportError, TransportError
from tests.harness import make_install, sample
from tests.sshd import SshServer


def test_the_content_store_keeps_what_fits_and_forgets_what_it_hands_on() -> None:
    store = ContentStore(limit=10)
    store.put(1, b"123456", b"78")
    store.put(2, b"12345")  # 8 + 5 > 10: not kept, its step reads the spool instead
    store.put(3, None)
    assert store.size == 8
    first = store.take(1)
    assert (first.data, first.fs) == (b"123456", b"78") and store.size == 0
    assert store.take(1).data is None and store.take(2).data is None
    store.put(4, b"1234")
    store.put(4, b"123456789")  # a content kept again replaces the earlier one
    assert store.size == 9 and store.take(4).data == b"123456789"


class Broken(Exception):
    pass


def test_one_by_one_fails_only_the_item_that_breaks_alone() -> None:
    runs: list[list[str]] = []
    failed: list[tuple[str, str]] = []

    def run(batch: Sequence[str]) -> None:
        runs.append(list(batch))
        if "bad" in batch:
            raise Broken("bad is in the batch")

    one_by_one(["a", "bad", "c"], run, breaks=lambda exc, _b: isinstance(exc, Broken),
               fail=lambda item, exc: failed.append((item, str(exc))))
    assert runs == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert failed == [("bad", "bad is in the batch")]


def test_one_by_one_fails_a_batch_of_one_at_once_and_lets_other_errors_through() -> None:
    runs: list[list[str]] = []
    failed: list[str] = []

    def run(batch: Sequence[str]) -> None:
        runs.append(list(batch))
        raise Broken(batch[0])

    one_by_one(["only"], run, breaks=lambda exc, _b: True,
               fail=lambda item, exc: failed.append(item))
    assert runs == [["only"]] and failed == ["only"]

    def unreachable(batch: Sequence[str]) -> None:
        raise TransportError("connection refused")

    with pytest.raises(TransportError):  # the channel's own condition: never one file's
        one_by_one(["a", "b"], unreachable,
                   breaks=lambda exc, _b: not isinstance(exc, TransportError),
                   fail=lambda item, exc: failed.append(item))
    assert failed == ["only"]


def test_the_retry_policy_retries_only_transient_transport_errors() -> None:
    assert is_transient(TransportError("reset"))
    assert not is_transient(PermanentTransportError("auth"))
    assert not is_transient(AttributeError("a renamed private name"))
    slept: list[float] = []
    told: list[tuple[str, int]] = []
    calls: list[int] = []
    policy = RetryPolicy(max_backoff=1, sleep=slept.append,
                         on_retry=lambda error, attempt, _delay: told.append((error, attempt)))

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransportError(f"reset {len(calls)}")
        return "done"

    assert policy.run(flaky) == "done"
    assert told == [("reset 1", 1), ("reset 2", 2)] and len(slept) == 2
    assert all(0 < s <= 2 for s in slept)

    def buggy() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        policy.run(buggy)
    assert policy.attempts == 2  # no retry of an unknown exception

    hurried = RetryPolicy(max_backoff=1, sleep=slept.append, on_retry=lambda *a: None,
                          deadline=0.0)
    with pytest.raises(OutOfTime, match="reset"):
        hurried.run(lambda: (_ for _ in ()).throw(TransportError("reset")))


def test_recovery_archives_a_sent_file_left_in_the_spool_without_a_server(
        tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd, sign_test_files=True)
    inst.drop("one.xml", sample(1))
    assert inst.run_once() == 0
    (sub,) = inst.submissions()
    assert sub.state == journal.SENT and sub.fi_name and sub.fs_name
    sent = inst.outbox / "sent" / "test"
    # as if the process died after `sent` and before the archive's moves
    shutil.move(sent / sub.fi_name, sub.spool_path)
    (sent / sub.fs_name).unlink()  # its FS was never synced: lost in the crash
    sshd.stop()
    cfg = inst.config
    db = inst.journal()
    try:
        signer = signing.load_signer_pem(inst.signer.cert_path, inst.signer.key_path)
        assert recovery.finish_interrupted(cfg, db, {"acme": signer}) == 1
    finally:
        db.close()
    assert (sent / sub.fi_name).read_bytes() == sample(1)
    signing.verify_fs(sample(1), (sent / sub.fs_name).read_bytes())  # made again, whole
    assert not Path(sub.spool_path).exists()


def test_a_special_entry_is_journaled_first_and_moved_once_it_can_be(
        tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd)
    folder = inst.outbox / "test" / "fla"
    folder.mkdir(parents=True)
    (folder / "link.xml").symlink_to(tmp_path / "secret.xml")
    blocked = inst.outbox / "rejected" / "test" / "fla"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the folder should be")
    assert inst.run_once(max_wait=3) == 1  # an entry left in the outbox fails the run
    (sub,) = inst.submissions()
    assert sub.state == journal.REJECTED and "symbolic link" in (sub.error or "")
    assert (folder / "link.xml").is_symlink()

    # the folder is fixed: a start-up recovery leaves the outbox alone, and the
    # claimer finishes the move of the same row instead of refusing it again
    blocked.unlink()
    db = inst.journal()
    try:
        assert recovery.finish_interrupted(inst.config, db, {"acme": None}) == 0
    finally:
        db.close()
    assert (folder / "link.xml").is_symlink()
    assert inst.run_once(max_wait=3) == 0
    assert (blocked / "link.xml").is_symlink() and not (folder / "link.xml").is_symlink()
    assert "symbolic link" in (blocked / "link.xml.reason.txt").read_text()
    assert [s.id for s in inst.submissions()] == [sub.id]

    # a regular file dropped later under the same name is a new file, and is sent
    inst.drop("link.xml", sample(2))
    assert inst.run_once() == 0
    states = sorted((s.id, s.state) for s in inst.submissions())
    assert states == [(sub.id, journal.REJECTED), (sub.id + 1, journal.SENT)]
    assert (blocked / "link.xml").is_symlink()


def test_a_new_special_entry_after_the_rejected_one_was_cleaned_up_is_refused_anew(
        tmp_path: Path, sshd: SshServer) -> None:
    """Payroll deletes what flad put in rejected/ (ordinary clean-up), then drops
    another bad entry under the same name: a new row with its own reason, never the old
    row reused in silence (review finding)."""
    inst = make_install(tmp_path, sshd)
    folder = inst.outbox / "test" / "fla"
    folder.mkdir(parents=True)
    (folder / "a.xml").symlink_to(tmp_path / "secret.xml")
    assert inst.run_once(max_wait=3) == 0
    rejected = inst.outbox / "rejected" / "test" / "fla"
    (rejected / "a.xml").unlink()
    (rejected / "a.xml.reason.txt").unlink()
    os.mkfifo(folder / "a.xml")
    inst.run_once(max_wait=3)
    subs = sorted(inst.submissions(), key=lambda s: s.id)
    assert [s.state for s in subs] == [journal.REJECTED, journal.REJECTED]
    assert "symbolic link" in (subs[0].error or "")
    assert "named pipe" in (subs[1].error or "")
    assert "named pipe" in (rejected / "a.xml.reason.txt").read_text()


def test_the_file_checker_imports_neither_the_transport_nor_the_journal() -> None:
    """`flad check` uses it: checking a file's content must not pull in the channel."""
    code = ("import sys, flad.filecheck; print(sorted(m for m in sys.modules "
            "if m.startswith(('flad.remote', 'flad.journal', 'flad.channel', 'paramiko'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"


def test_a_received_row_naming_a_pipe_is_refused_without_opening_it(
        tmp_path: Path, sshd: SshServer) -> None:
    """What a crash between the two journal writes of a special entry's refusal leaves."""
    inst = make_install(tmp_path, sshd)
    folder = inst.outbox / "test" / "fla"
    folder.mkdir(parents=True)
    pipe = tmp_path / "elsewhere" / "pipe.xml"
    pipe.parent.mkdir()
    os.mkfifo(pipe)  # opening it for reading would block the check
    db = inst.journal()
    try:
        sub_id = db.add_received(channel="acme", application="fla", environment="test",
                                 drop_name="pipe.xml", spool_path=str(pipe), sha256="",
                                 size=0)
    finally:
        db.close()
    assert inst.run_once(max_wait=3) == 0
    (sub,) = inst.submissions()
    assert sub.id == sub_id and sub.state == journal.REJECTED
    assert "not a regular file" in (sub.error or "")
    assert inst.remote() == []
