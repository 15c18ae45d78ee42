"""The fault suites' scoreboard: one row per scenario, a table and totals at the end.

`make test` runs the reduced form; `make faults` sets FLAD_FAULTS_FULL=1 for the full
one (more files, more kills) and reads the table this prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

FULL = os.environ.get("FLAD_FAULTS_FULL") == "1"
COLUMNS = ("dropped", "sent", "refused", "lost", "go_duplicates", "replies",
           "replies_twice")
_ROWS: list[dict[str, Any]] = []


@pytest.fixture
def scoreboard(request: pytest.FixtureRequest) -> Callable[..., None]:
    def record(**row: Any) -> None:
        _ROWS.append({"scenario": request.node.name.removeprefix("test_"), **row})
    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS:
        return
    header = ("scenario", *COLUMNS)
    table = [[str(r.get(c, 0)) if c != "scenario" else r["scenario"] for c in header]
             for r in _ROWS]
    totals = ["TOTAL", *(str(sum(int(r.get(c, 0)) for r in _ROWS)) for c in COLUMNS)]
    widths = [max(len(h), *(len(row[i]) for row in [*table, totals]))
              for i, h in enumerate(header)]
    write = terminalreporter.write_line
    write("")
    write(f"fault suites ({'full' if FULL else 'reduced'} form)")
    write("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in table:
        write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    write("  ".join(c.ljust(w) for c, w in zip(totals, widths, strict=True)))
    lost, dup, twice = (sum(int(r.get(c, 0)) for r in _ROWS)
                        for c in ("lost", "go_duplicates", "replies_twice"))
    write(f"totals: {lost} lost, {dup} duplicate GO, {twice} twice-delivered")
