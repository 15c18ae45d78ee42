"""Starting and stopping a whole sandbox: the SFTP server and its transfer point together.

:func:`start_sandbox` returns once the server accepts connections, so a test (or the
``flad sandbox`` command) can connect right after. :meth:`Sandbox.stop` closes every
session and joins every thread the sandbox started; it is safe to call twice.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import paramiko
from cryptography import x509
from lxml import etree

from flad import durable, naming, signing, xmlcheck
from flad.remote.knownhosts import fingerprint
from flad.sandbox import credentials
from flad.sandbox.replies import new_reference
from flad.sandbox.sftp_server import (
    REMOTE_FOLDERS,
    Jail,
    SftpContext,
    SftpListener,
    authorized_blobs,
)
from flad.sandbox.transfer_point import TransferPoint, TransferPointSettings, local_now

__all__ = ["KNOWN_HOSTS_NAME", "Sandbox", "SandboxError", "start_sandbox"]

StrPath = str | os.PathLike[str]
KNOWN_HOSTS_NAME = "sandbox-known_hosts"


class SandboxError(Exception):
    """The sandbox cannot start: a key, certificate, XSD or address it was given is unusable."""


@dataclass
class Sandbox:
    """A running sandbox. ``port`` is the real port (useful after asking for port 0)."""

    root: Path
    host: str
    port: int
    host_key: paramiko.PKey
    cert_path: Path
    """The certificate that signs replies (``ROOT/sandbox-cert.pem``): the client's reply trust."""
    known_hosts_path: Path
    """A known_hosts file naming this host, port and host key."""
    transfer_point: TransferPoint
    _listener: SftpListener = field(repr=False)
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def host_key_fingerprint(self) -> str:
        """``SHA256:...``, as ``ssh-keygen -l`` and OpenSSH clients show it."""
        return fingerprint(self.host_key)

    @property
    def ready_line(self) -> str:
        """The line printed once connections are accepted (scripts wait for it)."""
        return (
            f"sandbox listening on {_show_host(self.host)}:{self.port}, "
            f"host key {self.host_key_fingerprint}"
        )

    @property
    def published(self) -> list[Path]:
        """Every reply file put in place so far, in order (GO after its FO and FS)."""
        return list(self.transfer_point.publisher.published)

    def stop(self) -> None:
        """Stop accepting, close sessions, stop the transfer point, join every thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._listener.stop()
        finally:
            self.transfer_point.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _show_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _known_hosts_line(host: str, port: int, key: paramiko.PKey) -> str:
    where = host if port == 22 else f"[{host}]:{port}"
    return f"{where} {key.get_name()} {key.get_base64()}\n"


def _client_certificates(
    client_cert: StrPath | Sequence[x509.Certificate] | None,
) -> tuple[x509.Certificate, ...]:
    if client_cert is None:
        return ()
    if isinstance(client_cert, str | os.PathLike):
        try:
            return tuple(signing.load_certificates(client_cert))
        except signing.SigningError as exc:
            raise SandboxError(f"client certificate: {exc}") from None
    return tuple(client_cert)


def _schema(xsd: StrPath | etree.XMLSchema | None) -> etree.XMLSchema | None:
    if xsd is None or isinstance(xsd, etree.XMLSchema):
        return xsd
    try:
        return xmlcheck.load_schema(xsd)
    except xmlcheck.XsdUnusable as exc:
        raise SandboxError(str(exc)) from None


def start_sandbox(
    root: StrPath,
    *,
    authorized_keys: StrPath | Sequence[str],
    client_cert: StrPath | Sequence[x509.Certificate] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    username: str | None = None,
    notify_delay: float = 5.0,
    xsd: StrPath | etree.XMLSchema | None = None,
    xsds: Mapping[str, StrPath | etree.XMLSchema] | None = None,
    sender_id: str | int | None = None,
    poll_interval: float = 0.2,
    settle_seconds: float = 0.2,
    clock: Callable[[], datetime.datetime] | None = None,
    reference: Callable[[], str] | None = None,
) -> Sandbox:
    """Start a sandbox serving ``root`` and return once it accepts connections.

    ``authorized_keys``: a file of OpenSSH public key lines, or the lines themselves.
    ``client_cert``: the certificate(s) FS files sent to IN must verify with (a PEM or
    DER file, or certificates). ``port=0`` picks a free port (see ``Sandbox.port``).
    ``clock`` and ``reference`` fix the time and ReferenceNbr of replies for tests.
    ``xsds`` gives the XSD per application code (``DMFA``...: the DmfA, DIMONA and
    generic schemas each for its own files); ``xsd`` is for every other code.
    """
    root_path = Path(root)
    try:
        root_path.mkdir(parents=True, exist_ok=True)
        for folder in REMOTE_FOLDERS:
            (root_path / folder).mkdir(exist_ok=True)
        source = authorized_keys
        if not isinstance(source, str | os.PathLike):
            source = list(source)
        keys = credentials.load_authorized_keys(source)
        host_key = credentials.load_or_create_host_key(root_path)
        signer, cert_path = credentials.load_or_create_reply_signer(root_path)
        sender = naming.pad_sender(sender_id) if sender_id is not None else None
    except credentials.SandboxKeyError as exc:
        raise SandboxError(str(exc)) from None
    except ValueError as exc:
        raise SandboxError(f"sender id: {exc}") from None
    except OSError as exc:
        raise SandboxError(f"cannot prepare {root_path}: {exc.strerror or exc}") from None
    settings = TransferPointSettings(
        client_certificates=_client_certificates(client_cert),
        sender_id=sender,
        schema=_schema(xsd),
        schemas={code: schema for code, path in (xsds or {}).items()
                 if (schema := _schema(path)) is not None},
        notify_delay=notify_delay,
        poll_interval=poll_interval,
        settle_seconds=settle_seconds,
        clock=clock or local_now,
        reference=reference or new_reference,
    )
    private = credentials.state_dir(root_path)
    context = SftpContext(
        jail=Jail(root_path),
        host_key=host_key,
        authorized=authorized_blobs(keys),
        username=username,
    )
    point = TransferPoint(
        root_path, private, settings, signer, is_being_written=context.is_being_written
    )
    context.on_file_closed = point.wake
    try:
        listener = SftpListener(context, host, port)
    except OSError as exc:
        where = f"{_show_host(host)}:{port}"
        raise SandboxError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    known_hosts = root_path / KNOWN_HOSTS_NAME
    durable.write_file(known_hosts,
                       _known_hosts_line(host, listener.port, host_key).encode(), 0o644)
    point.start()
    listener.start()
    return Sandbox(
        root=root_path,
        host=host,
        port=listener.port,
        host_key=host_key,
        cert_path=cert_path,
        known_hosts_path=known_hosts,
        transfer_point=point,
        _listener=listener,
    )
