"""The memory of a big file's XML tree goes back to the system once it is checked."""

from __future__ import annotations

import pytest

from flad import memory, xmlcheck

_RECORD = b"<r><a>85073003328</a><b>2026-03-16</b><c>7.5</c></r>\n"


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_freed_tree_is_handed_back() -> None:
    if not memory.release_free_memory():
        pytest.skip("no glibc malloc_trim here: nothing to hand back")
    data = b"<d>" + _RECORD * 200_000 + b"</d>"  # 10 MiB, about 1.6 million nodes
    before = _rss_kib()
    tree = xmlcheck.parse_hardened(data)
    held = _rss_kib()
    assert held - before > 50 * 1024, "the tree should take well over 50 MiB"
    del tree
    assert memory.release_free_memory()
    after = _rss_kib()
    assert held - after > 40 * 1024, f"only {held - after} KiB of {held - before} came back"
