"""Commands beside the service: `flad replies` and `flad resend` ask it, nothing is lost.

The control socket itself is tested with a real socket in a real folder; the commands
with the real service (in a thread of the test) and the real `flad` command in a
subprocess, against the sshd fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flad import control, journal, logs
from flad.control import Answer, ControlServer, ControlUnavailable
from flad.journal import Journal
from tests.faults.audit import Consumer, audit_replies, audit_sending
from tests.harness import Running, make_install, sample, wait_for
from tests.replysets import acrf, put_set
from tests.sshd import SshServer
from tests.test_statelock import REPO_ROOT, flad_process


def echo(request: dict[str, Any]) -> Answer:
    if request["command"] == "boom":
        raise RuntimeError("broken on purpose")
    return Answer(0, out=[json.dumps(request, sort_keys=True)])


@pytest.fixture
def server(tmp_path: Path) -> Any:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    srv = ControlServer(state, echo, logs.get("test"))
    srv.start()
    yield srv
    srv.close()


def raw(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
        return out


def test_a_request_and_its_answer(server: ControlServer, tmp_path: Path) -> None:
    answer = control.ask(tmp_path / "state", {"command": "replies", "channel": None})
    assert (answer.code, answer.out, answer.err) == (
        0, ['{"channel": null, "command": "replies"}'], [])
    assert stat.S_IMODE(os.lstat(server.path).st_mode) == 0o600  # owner only
    assert stat.S_ISSOCK(os.lstat(server.path).st_mode)


def test_bad_requests_get_a_reason_and_the_server_goes_on(server: ControlServer) -> None:
    answer = json.loads(raw(server.path, b"not json\n"))
    assert answer["code"] == 2 and "not a request flad understands" in answer["err"][0]
    # longer than a request may be: refused without being read whole
    answer = json.loads(raw(server.path, b'{"command": "' + b"x" * 10000 + b'"}\n'))
    assert answer["code"] == 2
    answer = json.loads(raw(server.path, b'{"command": "boom"}\n'))
    assert answer["code"] == 1 and "broken on purpose" in answer["err"][0]
    assert control.ask(server.path.parent, {"command": "still"}).code == 0


def test_a_client_that_never_sends_does_not_block_others(server: ControlServer) -> None:
    silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
    try:
        for sock in silent:
            sock.connect(str(server.path))
        assert control.ask(server.path.parent, {"command": "meanwhile"}, timeout=5).code == 0
    finally:
        for sock in silent:
            sock.close()


def test_a_stale_socket_is_replaced_and_no_socket_is_unavailable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with pytest.raises(ControlUnavailable, match="no service answers"):
        control.ask(state, {"command": "replies"})
    # a service that died leaves its socket file: nobody listens there
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(state / control.SOCKET_NAME))
    dead.close()
    with pytest.raises(ControlUnavailable, match="no service answers"):
        control.ask(state, {"command": "replies"})
    srv = ControlServer(state, echo, logs.get("test"))
    srv.start()
    try:
        assert control.ask(state, {"command": "after"}).code == 0
    finally:
        srv.close()
    assert not (state / control.SOCKET_NAME).exists()  # a clean stop removes it


def test_the_server_refuses_another_user() -> None:
    """A client of another uid gets no answer (run as that uid in a child process)."""
    if os.getuid() != 0:
        pytest.skip("needs root to change user")
    state = Path(tempfile.mkdtemp(prefix="flad-control-"))  # pytest's tmp is root-only
    os.chmod(state, 0o755)
    srv = ControlServer(state, echo, logs.get("test"))
    srv.start()
    os.chmod(srv.path, 0o666)  # even where the mode lets it in, SO_PEERCRED does not
    read, write = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read)
            try:
                os.setgid(65534)
                os.setuid(65534)
                got = raw(srv.path, b'{"command": "x"}\n')
                os.write(write, b"answered" if got else b"refused")
            except ConnectionResetError:  # closed unanswered, the request unread
                os.write(write, b"refused")
            except Exception as exc:
                os.write(write, f"error {exc}".encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read, "rb") as f:
            assert f.read() == b"refused"
    finally:
        srv.close()
        shutil.rmtree(state)


def test_root_asks_a_service_that_runs_as_the_state_folders_owner() -> None:
    """`sudo flad replies` beside a service running as user flad: answered and trusted."""
    if os.getuid() != 0:
        pytest.skip("needs root to change user")
    state = Path(tempfile.mkdtemp(prefix="flad-control-"))
    os.chown(state, 65534, 65534)
    ready, done = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: the service's user
        try:
            os.setgid(65534)
            os.setuid(65534)
            srv = ControlServer(state, echo, logs.get("test"))
            srv.start()
            os.write(ready[1], b"ready")
            os.read(done[0], 1)  # until the test is done
            srv.close()
        finally:
            os._exit(0)
    try:
        assert os.read(ready[0], 5) == b"ready"
        assert control.ask(state, {"command": "as root"}, timeout=5).code == 0
        os.chown(state, 0, 0)  # a folder owned by root: the same server is not trusted
        with pytest.raises(ControlUnavailable, match="user id 65534"):
            control.ask(state, {"command": "as root"}, timeout=5)
    finally:
        os.write(done[1], b"x")
        os.waitpid(pid, 0)
        for fd in (*ready, *done):
            os.close(fd)
        shutil.rmtree(state)


# -- the commands beside the service ---------------------------------------------------

def test_replies_and_resend_ask_the_running_service(tmp_path: Path, sshd: SshServer) -> None:
    inst = make_install(tmp_path, sshd, poll_seconds=3600)  # only `flad replies` fetches
    inst.drop("a.xml", sample(1))
    inst.drop("b.xml", sample(1))  # same content: refused as a duplicate
    keys = [put_set(sshd, "ACRF", seq, acrf(f"GO.FLAX.006400.20261127.{seq:05d}.T.1"))
            for seq in (1, 2)]
    with Running(inst):
        wait_for(lambda: sorted(s.state for s in inst.submissions()) == ["rejected", "sent"],
                 timeout=30, what="one sent, one refused as a duplicate")
        wait_for(lambda: (tmp_path / "state" / control.SOCKET_NAME).exists(), what="socket")
        # the service polled once at start; new sets wait for `flad replies`
        keys += [put_set(sshd, "ACRF", seq, acrf(f"GO.FLAX.006400.20261127.{seq:05d}.T.1"))
                 for seq in (3, 4)]
        done = flad_process("replies", "-c", inst.config_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "reply set(s) delivered to" in done.stdout
        assert "(by the running service)" in done.stdout
        assert sorted(os.listdir(sshd.root / "OUTTEST")) == []
        for names in keys:
            assert (inst.inbox / "test" / names[-1]).is_file()  # every GO delivered
        done = flad_process("replies", "-c", inst.config_path, "--channel", "nope")
        assert done.returncode == 1 and "no channel 'nope'" in done.stderr
        (dup,) = [s for s in inst.submissions() if s.state == journal.REJECTED]
        done = flad_process("resend", "-c", inst.config_path, dup.id)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"submission {dup.id} ({dup.drop_name}) is queued again" in done.stdout
        wait_for(lambda: [s.state for s in inst.submissions()] == ["sent", "sent"],
                 timeout=30, what="the resent duplicate sent by the service")
        done = flad_process("resend", "-c", inst.config_path, dup.id)
        assert done.returncode == 1 and "only rejected or failed" in done.stderr
        done = flad_process("resend", "-c", inst.config_path, 999)
        assert done.returncode == 1 and "no submission 999" in done.stderr
    assert not (tmp_path / "state" / control.SOCKET_NAME).exists()
    # without the service, the commands take the lock and work themselves, as before
    put_set(sshd, "ACRF", 9, acrf("GO.FLAX.006400.20261127.00009.T.1"))
    done = flad_process("replies", "-c", inst.config_path)
    assert done.returncode == 0 and "1 reply set(s) delivered" in done.stdout
    assert "running service" not in done.stdout


def test_a_lock_holder_without_socket_is_named(tmp_path: Path, sshd: SshServer) -> None:
    """A `flad run --once` (or a service whose socket is gone) takes no requests."""
    inst = make_install(tmp_path, sshd)
    with Running(inst):
        sock = wait_for(lambda: (tmp_path / "state" / control.SOCKET_NAME), what="socket")
        wait_for(sock.exists, what="socket")
        sock.unlink()
        done = flad_process("replies", "-c", inst.config_path)
        assert done.returncode == 1
        assert "another flad works on the state folder" in done.stderr
        assert "takes no requests" in done.stderr


def test_beside_a_flad_run_process(tmp_path: Path, sshd: SshServer) -> None:
    """As an admin would: `flad run` as its own process, then `flad replies` beside it."""
    inst = make_install(tmp_path, sshd, poll_seconds=3600)
    service = subprocess.Popen([sys.executable, "-m", "flad.cli", "run", "-c",
                                str(inst.config_path)], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sock = tmp_path / "state" / control.SOCKET_NAME
    try:
        wait_for(sock.exists, timeout=30, what="the service's control socket")
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600

        def first_poll_done() -> bool:  # the service polls once at start, by itself
            db = Journal(tmp_path / "state" / "journal.sqlite3", readonly=True)
            try:
                return any(c.state == "connected" for c in db.channel_states())
            finally:
                db.close()

        wait_for(first_poll_done, timeout=30, what="the service's first poll")
        names = put_set(sshd, "ACRF", 1, acrf("GO.FLAX.006400.20261127.00001.T.1"))
        done = flad_process("replies", "-c", inst.config_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("acme: 1 reply set(s) delivered to ")
        assert (inst.inbox / "test" / names[-1]).is_file()
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=30)
    assert service.returncode == 0, err
    assert not sock.exists()  # a clean stop leaves no socket behind


def _repeat(results: list[Any], stop: threading.Event, fn: Any) -> None:
    while not stop.is_set():
        results.append(fn())


def test_everything_at_once_loses_nothing(tmp_path: Path, sshd: SshServer) -> None:
    """The service, `flad replies`, `flad resend` and `flad run --once` together.

    Hundreds of files (some broken, some duplicates put back by `flad resend`) and of
    reply sets (some fetched by the service's own polls, some by `flad replies`): no
    file lost or failed, no GO twice, no reply set lost or delivered twice.
    """
    files, sets = 240, 150
    # the service's own polls are rare: the reply sets come in through `flad replies`
    inst = make_install(tmp_path, sshd, production=True, poll_seconds=3600)
    consumer = Consumer(inst.inbox / "test", tmp_path / "consumed")
    consumer.start()
    dropped: list[str] = []
    for i in range(files):
        name = f"f{i:03d}.xml"
        # every 20th is broken; every 20th repeats one of its environment (a duplicate,
        # then resent)
        data = (b"<FLADeclaration>broken" if i % 20 == 7
                else sample(i - 2 if i % 20 == 10 else i))
        inst.drop(name, data, env="production" if i % 2 else "test")
        dropped.append(name)
    expected: list[str] = []
    replies: list[Any] = []
    onces: list[Any] = []
    resends: list[Any] = []
    stop = threading.Event()
    helpers = [
        threading.Thread(target=_repeat, args=(replies, stop, lambda: flad_process(
            "replies", "-c", inst.config_path, timeout=600))),
        threading.Thread(target=_repeat, args=(onces, stop, lambda: flad_process(
            "run", "--once", "-c", inst.config_path, "--max-wait", "2"))),
    ]
    with Running(inst):
        wait_for(lambda: (tmp_path / "state" / control.SOCKET_NAME).exists(), what="socket")
        for helper in helpers:
            helper.start()
        for first in range(1, sets + 1, 30):  # sets keep coming while all of it runs
            for seq in range(first, min(first + 30, sets + 1)):
                names = put_set(sshd, "ACRF", seq,
                                acrf(f"GO.FLAX.006400.20261127.{seq:05d}.T.1"))
                expected.append(names[0].split(".", 1)[1])
            time.sleep(0.5)

        def duplicates() -> list[int]:
            return [s.id for s in inst.submissions() if s.state == journal.REJECTED
                    and s.error and "same content was already sent" in s.error]

        def settled() -> bool:
            subs = inst.submissions()
            return len(subs) == files and not any(
                s.state in journal.OPEN_STATES for s in subs)

        wait_for(settled, timeout=240, what="every file checked and sent or refused")
        dups = duplicates()
        assert len(dups) == files // 20
        for sub_id in dups:
            resends.append(flad_process("resend", "-c", inst.config_path, sub_id))
        wait_for(settled, timeout=120, what="the resent duplicates sent")
        wait_for(lambda: not os.listdir(sshd.root / "OUTTEST"), timeout=120,
                 what="every reply set fetched")
        stop.set()
        for helper in helpers:
            helper.join(120)
    consumer.finish()
    subs = inst.submissions()
    assert not [s for s in subs if s.state == journal.FAILED], [
        (s.id, s.error) for s in subs if s.state == journal.FAILED]
    sending = audit_sending(inst, sshd, dropped)
    assert sending["lost"] == 0 and sending["go_duplicates"] == 0
    assert sending["refused"] == files // 20  # only the broken ones stay refused
    assert sending["sent"] == files - files // 20
    assert sorted(s.drop_name for s in subs) == sorted(dropped)  # no phantoms
    audit = audit_replies(consumer, sshd, expected)
    assert audit["replies_twice"] == 0 and audit["replies_lost"] == 0
    assert audit["replies"] == sets and audit["left_on_server"] == 0
    assert replies and all(r.returncode == 0 for r in replies), [
        r.stderr for r in replies if r.returncode]
    assert all("(by the running service)" in r.stdout for r in replies)
    by_command = sum(int(r.stdout.split(": ", 1)[1].split(" ", 1)[0]) for r in replies)
    assert 0 < by_command <= sets
    assert onces and all(r.returncode == 2 for r in onces)
    assert all("another flad works on the state folder" in r.stderr for r in onces)
    assert len(resends) == files // 20 and all(r.returncode == 0 for r in resends), [
        r.stderr for r in resends]


def test_replies_say_the_same_whether_the_command_or_the_service_polled() -> None:
    """One report for both ends: held sets fail `flad replies` beside the service too."""
    from flad.servicecalls import replies_report

    alone = replies_report("acme", "/srv/in", 3, 0, 2)
    served = replies_report("acme", "/srv/in", 3, 0, 2, by_service=True)
    assert alone.code == served.code == 1
    assert alone.out == ["acme: 3 reply set(s) delivered to /srv/in"]
    assert served.out == [alone.out[0] + " (by the running service)"]
    assert all("max_reply_bytes or min_free_bytes" in e for e in (*alone.err, *served.err))
    assert "the service's log" in served.err[0] and "the service's" not in alone.err[0]
    assert replies_report("acme", "/srv/in", 1, 0, 0).code == 0
