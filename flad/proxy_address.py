"""What a proxy address and its credentials must look like: pure rules, no I/O.

Shared by the configuration (which refuses a bad address at load) and `flad.remote.proxy`
(which connects through it).
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: HTTP CONNECT and SOCKS5, the two kinds company networks offer.
SCHEMES = ("http", "socks5")


def url_problem(url: str) -> str | None:
    """Why `url` cannot name a proxy, or None; credentials are never accepted inline."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a proxy address: {exc}"
    if parts.username is not None or parts.password is not None:
        return ("credentials are never written in the configuration: put 'user:password' "
                "in a file named by proxy_credentials_file, or in a systemd credential "
                "named by proxy_credential")
    if parts.scheme not in SCHEMES:
        return (f"must start with {' or '.join(f'{s}://' for s in SCHEMES)} "
                f"(HTTP CONNECT or SOCKS5), got {url!r}")
    if not parts.hostname or port is None:
        return f"must name a host and a port (e.g. {parts.scheme}://proxy.example:3128)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"must be scheme://host:port and nothing more, got {url!r}"
    return None


def credentials_problem(data: bytes) -> str | None:
    if b":" not in data or not data.split(b":", 1)[0]:
        return "must hold one line 'user:password'"
    return None
