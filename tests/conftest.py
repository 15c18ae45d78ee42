"""Shared fixtures. Keep each fixture short; helpers live in their own modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

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


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Commands run in-process configure structlog for the stream of their test: put the
    configuration back so later tests never log into a closed stream."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
