"""What a channel needs of its server, and nothing more.

The channel's stages and the reply poller are written against this `Protocol`, so that
the SFTP details (paramiko, pipelining, deadlines) stay behind it and a reader sees the
few operations a transfer point offers. Errors are those of `flad.remote.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from flad.remote.errors import TransportError
from flad.remote.wire import PutSource


@dataclass(frozen=True)
class Downloaded:
    """A file `get_files` wrote whole: its size and the SHA-256 of what was written."""

    size: int
    sha256: str


class Remote(Protocol):
    """One authenticated session to a transfer point; operations are serialized."""

    connections_opened: int

    @property
    def is_connected(self) -> bool: ...

    def connect(self) -> None:
        """Open the session unless it is open; errors say transient or permanent."""

    def ensure_connected(self) -> None:
        """Reconnect when the session is dead (or was dropped after an error)."""

    def close(self) -> None: ...

    def put_files(self, items: Sequence[tuple[PutSource, str]]) -> list[int]:
        """Upload together, each written whole and its size checked; return the sizes."""
        ...

    def put_bytes(self, data: bytes, remote: str) -> int: ...

    def size(self, remote: str) -> int | None:
        """The size of a remote file, or None when it does not exist."""
        ...

    def listdir(self, remote_dir: str) -> list[tuple[str, int]]:
        """(name, size) of the files in a remote folder, sorted by name."""
        ...

    def listdirs(self, remote_dirs: Sequence[str]
                 ) -> list[list[tuple[str, int]] | TransportError]:
        """Several folders listed together: each one's listing, or its own error."""
        ...

    def list_remote_folders(self) -> list[str]: ...

    def get_file(self, remote: str, local: Path) -> int:
        """Download into `local` (replaced), synced, its size checked."""
        ...

    def get_files(self, items: Sequence[tuple[str, int, Path]], *, sync: bool = True
                  ) -> list[Downloaded | TransportError]:
        """Download (remote, listed size, local path) together; per item its size or
        the error that concerns it alone."""
        ...

    def remove_files(self, remotes: Sequence[str]) -> list[TransportError | None]:
        """Remove together; per file None (absent counts as removed) or its error."""
        ...

    def remove(self, remote: str) -> None:
        """Remove a remote file; one already absent is not an error."""
