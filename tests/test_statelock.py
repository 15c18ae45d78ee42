"""One flad per state folder: a second one beside the service says so and does nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flad.statelock import StateLock, StateLocked
from tests.harness import Running, make_install, sample, wait_for
from tests.sshd import SshServer

REPO_ROOT = Path(__file__).parent.parent


def flad_process(*argv: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flad.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL)


def test_once_beside_the_service_is_refused(tmp_path: Path, sshd: SshServer) -> None:
    """`flad replies` beside the service asks it instead (issue 16): tests/test_control.py."""
    inst = make_install(tmp_path, sshd)
    with Running(inst):
        wait_for(lambda: (tmp_path / "state" / "flad.lock").exists(), what="the lock")
        inst.drop("a.xml", sample(1))
        done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "2")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "another flad works on the state folder" in done.stderr
        assert f"pid {os.getpid()}, flad run" in done.stderr  # who holds it
        wait_for(lambda: [s.state for s in inst.submissions()] == ["sent"], what="sent")
    # the service stopped: the lock went with it, and a --once run may work again
    done = flad_process("run", "-c", inst.config_path, "--once", "--max-wait", "5")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from flad.statelock import StateLock; StateLock(Path(sys.argv[1])).acquire('test');"
         " print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StateLocked, match=f"pid {holder.pid}, flad test"):
            StateLock(tmp_path).acquire("second")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with StateLock(tmp_path) as lock:
        lock.acquire("after the kill")
        assert (tmp_path / "flad.lock").stat().st_mode & 0o077 == 0


def test_the_lock_file_is_not_followed_when_it_is_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "flad.lock").symlink_to(target)
    with pytest.raises(OSError):
        StateLock(tmp_path / "state").acquire("test")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(("command", "advice"), [
    ("run", "systemctl stop flad"),
    ("run --once", "wait until it ends"),
    ("replies", "wait until it ends"),
])
def test_the_refusal_gives_the_advice_that_fits_the_holder(
        tmp_path: Path, command: str, advice: str) -> None:
    with StateLock(tmp_path) as holder:
        holder.acquire(command)
        with pytest.raises(StateLocked) as caught:
            StateLock(tmp_path).acquire("resend")
    assert f"flad {command}, since" in str(caught.value)
    assert advice in str(caught.value)
    if command != "run":
        assert "systemctl" not in str(caught.value)
