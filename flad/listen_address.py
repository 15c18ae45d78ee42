"""What `[daemon] metrics_listen` may say: pure rules, no I/O.

The metrics endpoint tells whoever reaches it how many files each channel sends and
when its certificates end: not a secret, but nothing to offer to the whole network
by mistake. A loopback address is accepted as it is; any other needs
`metrics_listen_public = true` written next to it, so that opening it is a choice.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

#: Host names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host.lower() in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # another host name: it may resolve to anything
            return False

    def shown(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class AddressProblem(ValueError):
    """The text cannot name an address to listen on; the message says what to write."""


def parse(text: str) -> ListenAddress:
    """`host:port` or `[ipv6]:port`; port 0 lets the system choose (tests)."""
    text = text.strip()
    example = "write host:port, e.g. \"127.0.0.1:9464\" or \"[::1]:9464\""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise AddressProblem(f"{text!r} is not an address: {example}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise AddressProblem(f"{text!r} is not an address: {example}")
    if not host:
        raise AddressProblem(f"{text!r} names no host (an empty host would listen on every "
                             f"interface): {example}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressProblem(f"{text!r}: the port must be a number from 0 to 65535")
    return ListenAddress(host, int(port_text))
