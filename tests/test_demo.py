"""`make demo` end to end: sandbox, flad, receipts, notifications, a refused file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py")],
                          env={**os.environ, "FLAD_DEMO_DIR": str(demo)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # a notification with a blocking anomaly is not called a success
    assert ("3 files acknowledged and notified OK, 1 notified with a blocking anomaly "
            "(needs attention), 1 broken file refused by flad") in out
    assert f"status -c {demo / 'flad.toml'}" in out  # how to look again, as typed
    assert "[[channel]]" in out and "port = " in out  # the configuration it runs
    assert out.count("NOTIFIED") == 4 and "!! REJECTED  broken-export.xml" in out
    assert "1 blocking, 1 other in 2 forms" in out  # one form per declaration
    # an anomaly with its label and the worker it concerns (the INSS of its Path)
    assert ("anomaly FLA-00012 class B: blocking anomaly FLA-00012 asked for by the file "
            "(sandbox) (tag Hours, value '7.5', worker INSS ") in out
    assert "inbox/production/GO.NOTI." in out and "inbox/test/GO.ACRF." in out
    # nothing left running: the sandbox and the service were stopped
    assert not [cmd for cmd in _command_lines() if str(demo) in cmd]


def _command_lines() -> list[str]:
    """Every process's command line, from /proc (no procps needed)."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace"))
            except OSError:
                continue  # the process ended meanwhile
    return lines
