"""Reaching the platform through a company's HTTP CONNECT or SOCKS5 proxy.

Many company networks reach the internet only through a proxy. The handshake with it
is python-socks' (a well-kept library that speaks both); flad only says which proxy,
bounds the leg by the connection timeout, and names the proxy in every error, so an
operator knows which hop to look at.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
from python_socks.sync import Proxy

from flad.remote.errors import PermanentTransportError, TransportError

_TYPES = {"http": ProxyType.HTTP, "socks5": ProxyType.SOCKS5}


@dataclass(frozen=True)
class ProxySettings:
    url: str  # scheme://host:port, without credentials
    credentials: bytes | None = field(default=None, repr=False)  # b"user:password"

    @property
    def shown(self) -> str:
        return f"proxy {self.url}"


def open_through(settings: ProxySettings, host: str, port: int,
                 timeout: float) -> socket.socket:
    """A socket to `host:port` through the proxy, the whole leg within `timeout`."""
    parts = urlsplit(settings.url)
    username = password = None
    if settings.credentials is not None:
        user, _, secret = settings.credentials.decode("utf-8", "replace").partition(":")
        username, password = user, secret
    proxy = Proxy.create(_TYPES[parts.scheme], parts.hostname or "", parts.port or 0,
                         username=username, password=password, rdns=True)
    where = f"{host}:{port} through {settings.shown}"
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


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_authentication(exc: ProxyError, reason: str) -> bool:
    code = getattr(exc, "error_code", None)
    text = reason.lower()
    return code == 407 or "auth" in text or "407" in text or "credential" in text
