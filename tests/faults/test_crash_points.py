"""SIGKILL at named points and at random moments, then restart: nothing lost, nothing twice.

The service runs as a separate process against the sshd fixture; a consumer thread
plays the payroll software and takes each reply set from the inbox as soon as its GO
is there, so a set delivered twice would be seen twice. `make test` runs the reduced
form; `make faults` (FLAD_FAULTS_FULL=1) the full one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.audit import Consumer, audit_replies, audit_sending
from tests.faults.conftest import FULL
from tests.harness import Install, make_install, sample
from tests.replysets import acrf, put_set
from tests.sshd import SshServer

SEND_POINTS = ["after_claim", "after_sequence", "before_fi", "before_go", "after_go"]
REPLY_POINTS = ["during_reply_download", "after_reply_download", "before_reply_rename",
                "between_reply_renames", "after_reply_delivery"]
#: points passed once per slice of reply sets (one slice here): killed at the first pass
ONCE_PER_SLICE = {"between_reply_renames"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAD_FAULT")}
    env.update(extra)
    return env


def run_once(config: Path, **env: str) -> int:
    proc = subprocess.run([sys.executable, "-m", "flad.cli", "run", "--once", "-c",
                           str(config), "--max-wait", "15"], env=clean_env(**env),
                          capture_output=True, timeout=180)
    return proc.returncode


def drop_batch(inst: Install, count: int) -> list[str]:
    names = []
    for i in range(count):
        name = f"f{i:03d}.xml"
        data = sample(i) if i % 10 != 7 else b"<FLADeclaration>broken"
        inst.drop(name, data, env="production" if i % 2 else "test")
        names.append(name)
    return names


def reply_sets(sshd: SshServer, first: int, count: int) -> list[str]:
    keys = []
    for seq in range(first, first + count):
        names = put_set(sshd, "ACRF", seq, acrf(f"GO.FLAX.006400.20261127.{seq:05d}.T.1"))
        keys.append(names[0].split(".", 1)[1])
    return keys


@pytest.mark.parametrize("point", SEND_POINTS + REPLY_POINTS)
def test_named_point(tmp_path: Path, sshd: SshServer, point: str,
                     scoreboard: Callable[..., None]) -> None:
    inst = make_install(tmp_path, sshd, production=True)
    dropped = drop_batch(inst, 10 if FULL else 6)
    expected = reply_sets(sshd, 1, 4 if FULL else 3)
    consumer = Consumer(inst.inbox / "test", tmp_path / "consumed")
    consumer.start()
    skip = "0" if point in ONCE_PER_SLICE else "1"
    assert run_once(inst.config_path, FLAD_FAULT_POINT=point, FLAD_FAULT_SKIP=skip) == -9
    assert run_once(inst.config_path) == 0
    assert run_once(inst.config_path) == 0  # a second pass finds nothing left to do
    consumer.finish()
    sending = audit_sending(inst, sshd, dropped)
    replies = audit_replies(consumer, sshd, expected)
    scoreboard(**sending, lost_replies=replies["replies_lost"], replies=replies["replies"],
               replies_twice=replies["replies_twice"])
    assert sending["lost"] == 0 and sending["go_duplicates"] == 0
    assert sending["sent"] + sending["refused"] == len(dropped)
    assert sorted(s.drop_name for s in inst.submissions()) == sorted(dropped)  # no phantoms
    assert replies["replies_twice"] == 0 and replies["replies_lost"] == 0
    assert replies["left_on_server"] == 0


def test_random_kills(tmp_path: Path, sshd: SshServer,
                      scoreboard: Callable[..., None]) -> None:
    rng = random.Random(int(os.environ.get("FLAD_FAULTS_SEED", "20261127")))
    files, kills, sets_per_round = (60, 15, 3) if FULL else (16, 4, 2)
    inst = make_install(tmp_path, sshd, production=True)
    consumer = Consumer(inst.inbox / "test", tmp_path / "consumed")
    consumer.start()
    dropped = drop_batch(inst, files)
    expected: list[str] = []
    for round_ in range(kills):
        expected += reply_sets(sshd, 1 + round_ * sets_per_round, sets_per_round)
        proc = subprocess.Popen([sys.executable, "-m", "flad.cli", "run", "-c",
                                 str(inst.config_path)], env=clean_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run_once(inst.config_path) == 0
    assert run_once(inst.config_path) == 0
    consumer.finish()
    sending = audit_sending(inst, sshd, dropped)
    replies = audit_replies(consumer, sshd, expected)
    scoreboard(**sending, replies=replies["replies"], replies_twice=replies["replies_twice"])
    assert sending["lost"] == 0 and sending["go_duplicates"] == 0
    assert sending["sent"] + sending["refused"] == files
    assert sorted(s.drop_name for s in inst.submissions()) == sorted(dropped)  # no phantoms
    assert replies["replies_twice"] == 0 and replies["replies_lost"] == 0
    assert replies["left_on_server"] == 0
