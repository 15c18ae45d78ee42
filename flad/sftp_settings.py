"""How flad reaches one channel's SFTP server: the one settings type for that concern.

The configuration builds it at load and the remote side connects with it, so the two
never drift apart field by field. Pure data, no I/O, and no paramiko: every command
loads a configuration, and few of them connect. Secrets are hidden from repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ProxySettings:
    url: str  # scheme://host:port, without credentials
    credentials: bytes | None = field(default=None, repr=False)  # b"user:password"

    @property
    def shown(self) -> str:
        return f"proxy {self.url}"


@dataclass(frozen=True)
class SftpSettings:
    host: str
    port: int
    username: str
    private_key: Path
    passphrase: bytes | None = field(repr=False)
    known_hosts: Path
    # Sign with SHA-1 "ssh-rsa" for an RSA user key (the platform accepts only that),
    # unless the server's server-sig-algs leaves it out. Ignored for other key types.
    legacy_ssh_rsa: bool = False
    connect_timeout: float = 15.0
    request_timeout: float = 60.0
    keepalive_seconds: int = 15
    proxy: ProxySettings | None = None  # HTTP CONNECT or SOCKS5, when the network needs one
    passphrase_source: str | None = None  # where the passphrase came from, for messages
