"""A damaged journal is said in one line by every command that opens it, never a traceback.

Issue 15, item 9: `flad status` on a corrupt journal printed a traceback. A journal of
random bytes fails when it is opened; a truncated one passes the open (its first page
is whole) and fails only when rows are read: both must end the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flad.journal import Journal
from tests import configs

REPO = Path(__file__).resolve().parent.parent


def _config(tmp: Path) -> Path:
    return configs.write(tmp, [configs.channel(tmp)])


def _random(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _truncated(path: Path) -> None:
    db = Journal(path)
    try:
        for i in range(400):
            db.add_received(channel="acme", application="fla", environment="test",
                            drop_name=f"payroll-{i:04d}-{'x' * 200}.xml",
                            spool_path=f"/spool/{i}", sha256="0" * 64, size=i)
    finally:
        db.close()
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        extra.unlink(missing_ok=True)
    size = path.stat().st_size
    assert size > 64 * 1024
    with open(path, "r+b") as f:
        f.truncate(size // 3)


@pytest.mark.parametrize("damage", [_random, _truncated], ids=["random-bytes", "truncated"])
@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["replies"],
                                     ["run", "--once", "--max-wait", "1"]],
                         ids=["status", "status-json", "replies", "run-once"])
def test_a_damaged_journal_is_one_line_and_a_failure(tmp_path: Path, damage: Callable[[Path], None],
                                                     command: list[str]) -> None:
    config = _config(tmp_path)
    journal = tmp_path / "state" / "journal.sqlite3"
    journal.parent.mkdir(parents=True, exist_ok=True)
    damage(journal)
    before = journal.read_bytes()
    done = subprocess.run([sys.executable, "-m", "flad.cli", command[0], "-c", str(config),
                           *command[1:]], capture_output=True, text=True, timeout=60,
                          cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines()
            if line.startswith(f"flad {command[0]}: the journal {journal} cannot be read")]
    assert len(said) == 1, done.stderr
    assert "Do not start on an empty journal" in said[0]
    assert journal.read_bytes() == before  # nothing was written into it
