"""Reaching the platform through a company's HTTP CONNECT or SOCKS5 proxy.

Many company networks reach the internet only through a proxy. The SOCKS5 handshake
is python-socks' (a well-kept library); flad only says which proxy, bounds the leg by
the connection timeout, and names the proxy in every error, so an operator knows which
hop to look at. HTTP CONNECT is flad's own, a few lines: python-socks reads the proxy's
answer with one large `recv`, which also swallows the SSH server's banner when it comes
in the same segment (SSH servers speak first), and the handshake then waits for a
banner that never comes.
"""

from __future__ import annotations

import base64
import socket
import time
from urllib.parse import urlsplit

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
from python_socks.sync import Proxy

from flad.remote.errors import PermanentTransportError, TransportError
from flad.sftp_settings import ProxySettings

_TYPES = {"socks5": ProxyType.SOCKS5}
#: The longest answer to CONNECT flad reads before giving up on the proxy.
_MAX_ANSWER = 16 * 1024


def open_through(settings: ProxySettings, host: str, port: int,
                 timeout: float) -> socket.socket:
    """A socket to `host:port` through the proxy, the whole leg within `timeout`."""
    parts = urlsplit(settings.url)
    where = f"{host}:{port} through {settings.shown}"
    if parts.scheme == "http":
        return _http_connect(settings, host, port, timeout, where)
    username = password = None
    if settings.credentials is not None:
        user, _, secret = settings.credentials.decode("utf-8", "replace").partition(":")
        username, password = user, secret
    proxy = Proxy.create(_TYPES[parts.scheme], parts.hostname or "", parts.port or 0,
                         username=username, password=password, rdns=True)
    try:
        return proxy.connect(dest_host=host, dest_port=port, timeout=timeout)
    except ProxyTimeoutError:
        raise TransportError(f"cannot connect to {where}: no answer within {timeout:g}s"
                             ) from None
    except ProxyConnectionError as exc:
        raise TransportError(f"cannot connect to {where}: the proxy cannot be reached "
                             f"({_reason(exc)})") from None
    except ProxyError as exc:
        reason = _reason(exc)
        if _is_authentication(exc, reason):
            raise PermanentTransportError(
                f"cannot connect to {where}: the proxy refused flad's credentials ({reason}); "
                "check proxy_credentials_file or proxy_credential") from None
        raise TransportError(f"cannot connect to {where}: the proxy refused ({reason})"
                             ) from None
    except OSError as exc:  # a socket error of the proxy leg that python-socks let through
        raise TransportError(f"cannot connect to {where}: {exc.strerror or exc}") from None


def _http_connect(settings: ProxySettings, host: str, port: int, timeout: float,
                  where: str) -> socket.socket:
    """HTTP CONNECT, reading the proxy's answer up to its blank line and not a byte more."""
    parts = urlsplit(settings.url)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((parts.hostname or "", parts.port or 0),
                                        timeout=timeout)
    except TimeoutError:
        raise TransportError(f"cannot connect to {where}: no answer within {timeout:g}s"
                             ) from None
    except OSError as exc:
        raise TransportError(f"cannot connect to {where}: the proxy cannot be reached "
                             f"({exc.strerror or exc})") from None
    try:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if settings.credentials is not None:
            token = base64.b64encode(settings.credentials).decode("ascii")
            lines.append(f"Proxy-Authorization: Basic {token}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        head = bytearray()
        while not head.endswith(b"\r\n\r\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            byte = sock.recv(1)  # one at a time: what follows the answer is the server's
            if not byte:
                raise TransportError(f"cannot connect to {where}: the proxy closed the "
                                     "connection without an answer")
            head += byte
            if len(head) > _MAX_ANSWER:
                raise TransportError(f"cannot connect to {where}: the proxy's answer is "
                                     f"longer than {_MAX_ANSWER} bytes")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status.split(" ", 2)
        code = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
        if code == 200:
            return sock
        shown = " ".join(status.split()[:6])[:120]
        if code in (401, 407):  # tinyproxy answers 401 to credentials it refuses
            raise PermanentTransportError(
                f"cannot connect to {where}: the proxy refused flad's credentials "
                f"({shown}); check proxy_credentials_file or proxy_credential")
        raise TransportError(f"cannot connect to {where}: the proxy refused ({shown})")
    except TimeoutError:
        sock.close()
        raise TransportError(f"cannot connect to {where}: no answer within {timeout:g}s"
                             ) from None
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_authentication(exc: ProxyError, reason: str) -> bool:
    code = getattr(exc, "error_code", None)
    text = reason.lower()
    return code == 407 or "auth" in text or "407" in text or "credential" in text
