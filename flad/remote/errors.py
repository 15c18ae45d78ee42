"""What can go wrong with a remote, in the two kinds a channel acts on.

`TransportError` is transient (refused, reset, timed out, EOF): the caller reconnects and
retries with backoff. `PermanentTransportError` and its subclasses need a person (host
key, credentials, permissions, an unsupported paramiko): retrying blindly would only
repeat them. Anything else that escapes a remote is a bug and is never dressed up as
either kind.
"""

from __future__ import annotations

import socket


class TransportError(Exception):
    """Transient: the connection failed or was lost; reconnect and retry with backoff."""


class PermanentTransportError(TransportError):
    """Needs a person (configuration, keys, permissions): do not retry blindly."""


class HostKeyUnknown(PermanentTransportError):
    """The server's host key is not in known_hosts."""


class HostKeyMismatch(PermanentTransportError):
    """The server presented a host key other than the one in known_hosts."""


class AuthenticationFailed(PermanentTransportError):
    """The server refused our user name and key."""


class RemotePermissionDenied(PermanentTransportError):
    """The server refused an SFTP operation on a path (permission denied)."""


class RemoteNotFound(PermanentTransportError):
    """A remote file or folder the operation needs does not exist."""


class PrivateKeyError(PermanentTransportError):
    """The private key file cannot be read, decrypted or used."""




class RemoteIncompatible(PermanentTransportError):
    """The installed paramiko lacks something flad relies on (see `paramiko_compat`)."""


def describe(exc: BaseException) -> str:
    """One line naming an exception: its text, else its type."""
    if isinstance(exc, socket.gaierror):
        text = f"cannot resolve host name ({exc.strerror})"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror.lower() if exc.errno else exc.strerror
    else:
        text = str(exc)
    if isinstance(exc, TimeoutError) and text in ("", "timed out"):
        text = "timed out"
    elif isinstance(exc, EOFError) and not text:
        text = "closed by the server (EOF)"
    text = " ".join(text.split()).rstrip(" :")  # paramiko: "Server connection dropped: "
    return text or type(exc).__name__

