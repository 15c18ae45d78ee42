"""The platform's side of a channel: SSH and SFTP behind one narrow interface.

- :mod:`~flad.remote.protocol`: `Remote`, what the channel needs of a server;
- :mod:`~flad.remote.errors`: transient and permanent errors;
- :mod:`~flad.remote.sftp`: `SftpChannel`, the `Remote` flad uses, and its settings;
- :mod:`~flad.remote.connect`: connection set-up with deadlines, public paramiko options;
- :mod:`~flad.remote.proxy`: the way out through an HTTP CONNECT or SOCKS5 proxy;
- :mod:`~flad.remote.knownhosts` and :mod:`~flad.remote.keys`: trust and identity;
- :mod:`~flad.remote.wire`: write sizes and pipelining bounds;
- :mod:`~flad.remote.paramiko_compat`: every private paramiko name, checked at start-up.

May import `flad.config`-free pure modules only; the channel and the commands import it.
"""

from __future__ import annotations

from flad.remote.connect import fetch_host_key
from flad.remote.errors import (
    AuthenticationFailed,
    HostKeyMismatch,
    HostKeyUnknown,
    PermanentTransportError,
    PrivateKeyError,
    RemoteIncompatible,
    RemoteNotFound,
    RemotePermissionDenied,
    TransportError,
)
from flad.remote.keys import load_private_key
from flad.remote.knownhosts import add_known_host, fingerprint, known_hosts_name
from flad.remote.protocol import Remote
from flad.remote.sftp import SftpChannel
from flad.sftp_settings import ProxySettings, SftpSettings

__all__ = [
    "AuthenticationFailed",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "PermanentTransportError",
    "PrivateKeyError",
    "ProxySettings",
    "Remote",
    "RemoteIncompatible",
    "RemoteNotFound",
    "RemotePermissionDenied",
    "SftpChannel",
    "SftpSettings",
    "TransportError",
    "add_known_host",
    "fetch_host_key",
    "fingerprint",
    "known_hosts_name",
    "load_private_key",
]
