"""SIGKILL at every named point of the sending path, then restart: nothing lost, no GO twice.

This is the reduced form that `make test` runs; the full suite adds random kills.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flad import journal, naming
from tests.harness import make_install, sample
from tests.sshd import SshServer

POINTS = ["after_claim", "after_sequence", "before_fi", "before_go", "after_go"]


def run_flad(config: Path, point: str | None = None, skip: int = 0) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAD_FAULT")}
    if point:
        env.update(FLAD_FAULT_POINT=point, FLAD_FAULT_SKIP=str(skip))
    proc = subprocess.run([sys.executable, "-m", "flad.cli", "run", "--once", "-c",
                           str(config), "--max-wait", "10"], env=env, capture_output=True,
                          timeout=120)
    return proc.returncode


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_named_point_then_restart(tmp_path: Path, sshd: SshServer, point: str) -> None:
    inst = make_install(tmp_path, sshd, production=True)
    files = 6
    for i in range(files):
        inst.drop(f"f{i}.xml", sample(i), env="production" if i % 2 else "test")
    assert run_flad(inst.config_path, point, skip=2) == -9  # killed on the third pass
    assert run_flad(inst.config_path) == 0

    subs = inst.submissions()
    assert sorted(s.drop_name for s in subs) == [f"f{i}.xml" for i in range(files)]
    assert {s.state for s in subs} == {journal.SENT}
    gos = [n for folder in ("IN", "INTEST") for n in inst.remote(folder) if n.startswith("GO.")]
    assert len(gos) == files
    keys = collections.Counter(naming.parse(n).set_key for n in gos)
    assert max(keys.values()) == 1  # no sequence number used twice
    go_opens = [p for op, p in sshd.sftp_operations() if op == "open" and "/GO." in p]
    assert len(go_opens) == files, go_opens  # no GO uploaded twice
    for sub in subs:  # each FI on the server is whole
        folder = "IN" if sub.environment == "production" else "INTEST"
        assert sub.fi_name
        index = int(sub.drop_name[1])
        assert (sshd.root / folder / sub.fi_name).read_bytes() == sample(index)
    assert not list((inst.outbox / "test" / "fla").iterdir())
    assert not list((inst.outbox / "production" / "fla").iterdir())
