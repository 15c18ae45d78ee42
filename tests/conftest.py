"""Shared fixtures. Keep each fixture short; helpers live in their own modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sshd import SshdMissing, SshServer


@pytest.fixture
def sshd() -> Iterator[SshServer]:
    """A started real OpenSSH server (fresh per test: it starts in a few milliseconds)."""
    try:
        server = SshServer()
    except SshdMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.close()
