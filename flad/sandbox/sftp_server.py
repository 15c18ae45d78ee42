"""A small SFTP server on paramiko's server side: the sandbox's stand-in for the platform.

Public-key login only; every path a client names is confined to the sandbox root. The
confinement is the point of this module, so it is done once, in :class:`Jail`: a client
path is normalised as a POSIX path anchored at ``/`` (so ``..`` stops at the root),
mapped under the root, resolved with ``realpath`` (so a symlink is followed before the
check, never after) and refused unless the result is still inside the root. The
sandbox's private folder (``.sandbox``: host key, reply key, state) is refused and left
out of listings.

One thread per connection runs the SSH handshake and then waits for the session to end;
paramiko runs the SFTP requests of that session in its own subsystem thread. Both kinds
of thread are tracked and joined on :meth:`SftpListener.stop`.

RSA user keys may sign with the legacy SHA-1 ``ssh-rsa`` algorithm (the real platform
only offers that one); paramiko 4+ verifies only SHA-2, so :class:`_LegacyRSAKey` adds it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import paramiko
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import (
    SFTP_FAILURE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    SFTP_PERMISSION_DENIED,
)

from flad.platform import REMOTE_IN, REMOTE_OUT
from flad.remote.knownhosts import fingerprint
from flad.sandbox.credentials import STATE_DIR_NAME

__all__ = ["REMOTE_FOLDERS", "Jail", "SftpContext", "SftpListener"]

log = logging.getLogger("flad.sandbox")

REMOTE_FOLDERS = tuple(sorted({*REMOTE_IN.values(), *REMOTE_OUT.values()}))
_ACCEPT_POLL_SECONDS = 0.2
_JOIN_SECONDS = 5.0


class Jail:
    """Maps client paths to real paths that can only be inside ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    @staticmethod
    def virtual(path: str) -> str:
        """The client path normalised at ``/``: ``../x``, ``/a/../../x`` -> ``/x``."""
        if "\x00" in path:
            raise PermissionError(errno.EACCES, "NUL in path")
        parts: list[str] = []
        for element in path.split("/"):
            if element in ("", "."):
                continue
            if element == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(element)
        return "/" + "/".join(parts)

    def _inside(self, real: str) -> str:
        """``real`` if it is the root or below it and not the private folder."""
        root = str(self.root)
        if real != root and not real.startswith(root + os.sep):
            raise PermissionError(errno.EACCES, "outside the sandbox root")
        relative = real[len(root) :].lstrip(os.sep)
        if relative.split(os.sep, 1)[0] == STATE_DIR_NAME:
            raise PermissionError(errno.EACCES, "private to the sandbox")
        return real

    def real(self, path: str, *, follow: bool = True) -> str:
        """The real path for a client path; PermissionError if it would leave the root.

        ``follow=False`` resolves every component but the last, for operations on a
        name itself (lstat, remove, rename): a symlink is then handled as a link.
        """
        virtual = self.virtual(path)
        candidate = os.path.join(str(self.root), virtual.lstrip("/"))
        if follow or virtual == "/":
            return self._inside(os.path.realpath(candidate))
        parent, name = os.path.split(candidate)
        return self._inside(os.path.join(self._inside(os.path.realpath(parent)), name))

    def is_root(self, real: str) -> bool:
        """True for the sandbox root itself, which a client may list but never remove."""
        return real == str(self.root)

    def protected(self, real: str) -> bool:
        """The root and its platform folders: a client cannot remove or rename them."""
        return self.is_root(real) or (
            os.path.dirname(real) == str(self.root) and os.path.basename(real) in REMOTE_FOLDERS
        )


@dataclass
class SftpContext:
    """What every connection shares: the jail, who may log in, what is open for writing."""

    jail: Jail
    host_key: paramiko.PKey
    authorized: frozenset[bytes]
    username: str | None = None
    on_file_closed: Callable[[str], None] = lambda _path: None
    lock: threading.Lock = field(default_factory=threading.Lock)
    writing: collections.Counter[str] = field(default_factory=collections.Counter)
    threads: list[threading.Thread] = field(default_factory=list)

    def is_being_written(self, real: str) -> bool:
        """True while some client holds ``real`` open for writing (not yet closed)."""
        with self.lock:
            return self.writing[real] > 0

    def track(self, thread: threading.Thread) -> None:
        """Remember a thread to join at stop; forget those already finished."""
        with self.lock:
            self.threads[:] = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)


def _errno_code(exc: OSError) -> int:
    if isinstance(exc, PermissionError):
        return SFTP_PERMISSION_DENIED
    return paramiko.SFTPServer.convert_errno(exc.errno or 0)


def _apply_attributes(target: int | str, attr: paramiko.SFTPAttributes) -> None:
    """Mode, times and size; owner changes are ignored (the sandbox runs as one user).

    Not paramiko's set_file_attr: its size branch reopens the file with "w+", which
    empties it before truncating. A field the client did not send stays None.
    """
    if attr.st_mode is not None:
        os.chmod(target, attr.st_mode & 0o7777)
    if attr.st_atime is not None and attr.st_mtime is not None:
        os.utime(target, (attr.st_atime, attr.st_mtime))
    if attr.st_size is not None:
        os.truncate(target, attr.st_size)


class _Handle(paramiko.SFTPHandle):
    """An open file; paramiko's default read/write use ``readfile``/``writefile``."""

    def __init__(
        self, context: SftpContext, real: str, fileobj: IO[Any], flags: int, writing: bool
    ) -> None:
        super().__init__(flags)
        self._context = context
        self._real = real
        self._file = fileobj
        self._writing = writing
        self._closed = False
        self.readfile = fileobj
        if writing:
            self.writefile = fileobj

    def close(self) -> None:
        """Close once; a GO or TD closed after writing wakes the transfer point."""
        if self._closed:
            return
        self._closed = True
        try:
            super().close()
        finally:
            if self._writing:
                with self._context.lock:
                    self._context.writing[self._real] -= 1
                    if self._context.writing[self._real] <= 0:
                        del self._context.writing[self._real]
                self._context.on_file_closed(self._real)

    def stat(self) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self._file.fileno()))
        except OSError as exc:
            return _errno_code(exc)

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        try:
            _apply_attributes(self._file.fileno(), attr)
        except OSError as exc:
            return _errno_code(exc)
        return SFTP_OK


def _file_mode(flags: int) -> str:
    """The ``open()`` mode string matching os-level flags, for ``os.fdopen``."""
    access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
    if flags & os.O_APPEND:
        return "ab+" if access == os.O_RDWR else "ab"
    if access == os.O_WRONLY:
        return "wb"
    if access == os.O_RDWR:
        return "r+b"
    return "rb"


class _SftpInterface(paramiko.SFTPServerInterface):
    """The SFTP operations a client needs, each confined by the jail."""

    def __init__(self, server: paramiko.ServerInterface, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        if not isinstance(server, _SshServer):
            raise TypeError("the sandbox SFTP interface needs the sandbox SSH server")
        self._context = server.context
        self._jail = server.context.jail

    def open(
        self, path: str, flags: int, attr: paramiko.SFTPAttributes
    ) -> paramiko.SFTPHandle | int:
        try:
            real = self._jail.real(path)
            mode = 0o644
            if attr.st_mode is not None:
                mode = attr.st_mode & 0o777
            fd = os.open(real, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except OSError as exc:
            return _errno_code(exc)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return SFTP_FAILURE
            fileobj = os.fdopen(fd, _file_mode(flags))
        except OSError as exc:
            os.close(fd)
            return _errno_code(exc)
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR))
        if writing:
            with self._context.lock:
                self._context.writing[real] += 1
        return _Handle(self._context, real, fileobj, flags, writing)

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        try:
            real = self._jail.real(path)
            names = os.listdir(real)
            entries: list[paramiko.SFTPAttributes] = []
            for name in sorted(names):
                if self._jail.is_root(real) and name == STATE_DIR_NAME:
                    continue
                with contextlib.suppress(OSError):
                    info = os.lstat(os.path.join(real, name))
                    entries.append(paramiko.SFTPAttributes.from_stat(info, name))
            return entries
        except OSError as exc:
            return _errno_code(exc)

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._jail.real(path)))
        except OSError as exc:
            return _errno_code(exc)

    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(
                os.lstat(self._jail.real(path, follow=False))
            )
        except OSError as exc:
            return _errno_code(exc)

    def remove(self, path: str) -> int:
        try:
            real = self._jail.real(path, follow=False)
            if self._jail.protected(real):
                return SFTP_PERMISSION_DENIED
            os.unlink(real)
        except OSError as exc:
            return _errno_code(exc)
        return SFTP_OK

    def _rename(self, oldpath: str, newpath: str, *, replace: bool) -> int:
        try:
            old = self._jail.real(oldpath, follow=False)
            new = self._jail.real(newpath, follow=False)
            if self._jail.protected(old) or self._jail.protected(new):
                return SFTP_PERMISSION_DENIED
            if replace:
                os.replace(old, new)
            else:
                # SFTP v3 rename never replaces an existing name (OpenSSH refuses too).
                if os.path.lexists(new):
                    return SFTP_FAILURE
                os.rename(old, new)
        except OSError as exc:
            return _errno_code(exc)
        self._context.on_file_closed(new)
        return SFTP_OK

    def rename(self, oldpath: str, newpath: str) -> int:
        return self._rename(oldpath, newpath, replace=False)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._rename(oldpath, newpath, replace=True)

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        try:
            mode = 0o755
            if attr.st_mode is not None:
                mode = attr.st_mode & 0o777
            os.mkdir(self._jail.real(path, follow=False), mode)
        except OSError as exc:
            return _errno_code(exc)
        return SFTP_OK

    def rmdir(self, path: str) -> int:
        try:
            real = self._jail.real(path, follow=False)
            if self._jail.protected(real):
                return SFTP_PERMISSION_DENIED
            os.rmdir(real)
        except OSError as exc:
            return _errno_code(exc)
        return SFTP_OK

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        try:
            _apply_attributes(self._jail.real(path), attr)
        except OSError as exc:
            return _errno_code(exc)
        return SFTP_OK

    def canonicalize(self, path: str) -> str:
        try:
            return self._jail.virtual(path)
        except PermissionError:
            return "/"

    def readlink(self, path: str) -> str | int:
        return SFTP_OP_UNSUPPORTED

    def symlink(self, target_path: str, path: str) -> int:
        return SFTP_OP_UNSUPPORTED


class _SftpSubsystem(paramiko.SFTPServer):
    """paramiko's SFTP subsystem, registered so that stop() can join its thread."""

    def __init__(
        self,
        channel: paramiko.Channel,
        name: str,
        server: paramiko.ServerInterface,
        sftp_si: type[paramiko.SFTPServerInterface] = _SftpInterface,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(channel, name, server, sftp_si, *args, **kwargs)
        if isinstance(server, _SshServer):
            server.context.track(self)


class _SshServer(paramiko.ServerInterface):
    """Public-key authentication against the authorized keys, SFTP sessions only."""

    def __init__(self, context: SftpContext, peer: str) -> None:
        self.context = context
        self.peer = peer

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        wanted = self.context.username
        if (wanted is None or username == wanted) and key.asbytes() in self.context.authorized:
            log.info("sandbox login %r from %s with %s", username, self.peer, fingerprint(key))
            return AUTH_SUCCESSFUL
        log.info("sandbox login refused for %r from %s (%s)", username, self.peer, fingerprint(key))
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _LegacyRSAKey(paramiko.RSAKey):
    """An RSA public key that also verifies the SHA-1 ``ssh-rsa`` signatures paramiko 4+ drops."""

    def verify_ssh_sig(self, data: bytes, msg: paramiko.Message) -> bool:
        raw = msg.asbytes()
        probe = paramiko.Message(raw)
        if probe.get_text() != "ssh-rsa":
            return super().verify_ssh_sig(data, paramiko.Message(raw))
        signature = probe.get_binary()
        public = serialization.load_ssh_public_key(
            b"ssh-rsa " + self.get_base64().encode("ascii")
        )
        if not isinstance(public, rsa.RSAPublicKey):
            return False
        # Like paramiko: some clients do not pad the signature to the key size.
        size = (public.key_size + 7) // 8
        signature = signature.rjust(size, b"\x00")
        try:
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())
        except InvalidSignature:
            return False
        return True


class _Transport(paramiko.Transport):
    """A server transport that accepts the legacy ``ssh-rsa`` user-key algorithm too."""

    _preferred_pubkeys: ClassVar[tuple[str, ...]] = (
        *vars(paramiko.Transport)["_preferred_pubkeys"],
        "ssh-rsa",
    )
    _key_info: ClassVar[dict[str, Any]] = {
        **vars(paramiko.Transport)["_key_info"],
        "ssh-rsa": _LegacyRSAKey,
    }


class SftpListener:
    """The listening socket, its accept thread and one thread per connection."""

    def __init__(self, context: SftpContext, host: str, port: int) -> None:
        self.context = context
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = info[0]
        self._socket = socket.socket(family, kind, proto)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(address)
            self._socket.listen(16)
            self._socket.settimeout(_ACCEPT_POLL_SECONDS)
        except OSError:
            self._socket.close()
            raise
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._stopping = threading.Event()
        self._transports: set[paramiko.Transport] = set()
        self._accepter = threading.Thread(
            target=self._accept_loop, name=f"sandbox-accept-{self.port}", daemon=True
        )

    def start(self) -> None:
        """Start accepting: connections are served from here on."""
        self._accepter.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("sandbox accept failed")
                continue
            name = f"{peer[0]}:{peer[1]}"
            thread = threading.Thread(
                target=self._serve, args=(conn, name), name=f"sandbox-conn-{name}", daemon=True
            )
            self.context.track(thread)
            thread.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        """Handshake, then wait until the client leaves or the sandbox stops."""
        transport = _Transport(conn)
        with self.context.lock:
            if self._stopping.is_set():
                conn.close()
                return
            self._transports.add(transport)
        try:
            transport.add_server_key(self.context.host_key)
            transport.set_subsystem_handler("sftp", _SftpSubsystem, _SftpInterface)
            try:
                transport.start_server(server=_SshServer(self.context, peer))
            except (paramiko.SSHException, EOFError, OSError) as exc:
                log.info("sandbox connection from %s failed: %s", peer, exc or type(exc).__name__)
                return
            while transport.is_active() and not self._stopping.is_set():
                transport.join(_ACCEPT_POLL_SECONDS)
        finally:
            transport.close()
            with self.context.lock:
                self._transports.discard(transport)

    def stop(self) -> None:
        """Stop accepting, close every session and join every thread this listener made."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._socket.close()
        with self.context.lock:
            transports = list(self._transports)
        for transport in transports:
            transport.close()
        if self._accepter.is_alive():
            self._accepter.join(_JOIN_SECONDS)
        for transport in transports:
            if transport.ident is not None and transport is not threading.current_thread():
                transport.join(_JOIN_SECONDS)
        with self.context.lock:
            threads = list(self.context.threads)
        for thread in threads:
            if thread is not threading.current_thread() and thread.ident is not None:
                thread.join(_JOIN_SECONDS)


def authorized_blobs(keys: Sequence[paramiko.PKey]) -> frozenset[bytes]:
    """The wire form of each authorized key, which is what a login offers."""
    return frozenset(key.asbytes() for key in keys)
