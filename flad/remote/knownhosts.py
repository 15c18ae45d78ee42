"""known_hosts as OpenSSH reads it: host patterns, hashed names, revoked keys.

flad never trusts an unknown server key by itself: keys are added only by
`flad trust-host`, after a person compared the fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko
import structlog
from paramiko.pkey import UnknownKeyType

from flad.remote.errors import HostKeyMismatch, PermanentTransportError

log = structlog.get_logger("flad.remote")


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as `ssh-keygen -l` prints it: `SHA256:<base64, no padding>`."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH uses for a host in known_hosts: `host`, or `[host]:port`."""
    return host if port == 22 else f"[{host}]:{port}"


def _host_matches(name: str, patterns: str) -> bool:
    """OpenSSH host-pattern matching: hashed names, `*`/`?` wildcards, `!` negation."""
    matched = False
    for pattern in patterns.split(","):
        if pattern.startswith("|1|"):
            try:
                if paramiko.HostKeys.hash_host(name, pattern) == pattern:
                    matched = True
            except (binascii.Error, ValueError, AssertionError):
                continue
        elif pattern.startswith("!"):
            if _wildcard_match(name, pattern[1:]):
                return False
        elif _wildcard_match(name, pattern):
            matched = True
    return matched


def _wildcard_match(name: str, pattern: str) -> bool:
    """OpenSSH wildcards: only `*` and `?` are special (`[` of `[host]:port` is not)."""
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()
    )
    return re.fullmatch(regex, name.lower()) is not None


@dataclass(frozen=True)
class KnownKeys:
    trusted: list[paramiko.PKey]
    revoked: list[paramiko.PKey]


def _parse_key(key_type: str, key_b64: str) -> paramiko.PKey | None:
    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64, validate=True))
    except (UnknownKeyType, paramiko.SSHException, ValueError, binascii.Error):
        return None


def known_keys(known_hosts: Path, host: str, port: int) -> KnownKeys:
    """The keys known_hosts trusts (and revokes) for `host:port`."""
    name = known_hosts_name(host, port)
    trusted: list[paramiko.PKey] = []
    revoked: list[paramiko.PKey] = []
    try:
        text = known_hosts.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return KnownKeys(trusted, revoked)
    except OSError as exc:
        raise PermanentTransportError(
            f"cannot read known_hosts {known_hosts}: {exc.strerror or exc}"
        ) from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        if len(fields) < 3 or marker not in ("", "@revoked"):
            continue  # host certificates (@cert-authority) are not used here
        if not _host_matches(name, fields[0]):
            continue
        key = _parse_key(fields[1], fields[2])
        if key is None:
            log.warning(
                "known_hosts_line_skipped", file=str(known_hosts), line=lineno, key_type=fields[1]
            )
            continue
        (revoked if marker else trusted).append(key)
    return KnownKeys(trusted, revoked)


def add_known_host(known_hosts: Path, host: str, port: int, key: paramiko.PKey) -> None:
    """Trust `key` for `host:port`: append `[host]:port type base64` to known_hosts.

    Creates the file (0644) and its folder. Does nothing when the same key is already
    trusted. Refuses (HostKeyMismatch) when known_hosts trusts another key for that host,
    of the same type or not: the old line must be removed on purpose first.
    """
    known = known_keys(known_hosts, host, port)
    name = known_hosts_name(host, port)
    for old in known.trusted:
        if old.asbytes() == key.asbytes():
            return
        if old.get_name() == key.get_name():
            raise HostKeyMismatch(
                f"known_hosts {known_hosts} already trusts another {old.get_name()} key for "
                f"{name} ({fingerprint(old)}); remove it first "
                f"(ssh-keygen -R '{name}' -f {known_hosts}) to trust {fingerprint(key)}"
            )
    if known.trusted:
        # a key of a new type beside the trusted one would widen what flad accepts
        # without a word: the person asked to check one fingerprint, not two
        trusted = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in known.trusted)
        raise HostKeyMismatch(
            f"known_hosts {known_hosts} already trusts {trusted} for {name}; the server "
            f"showed a {key.get_name()} key ({fingerprint(key)}) instead. flad asks only "
            "for the key types it trusts, so this one is not needed; to trust it anyway, "
            f"remove the old line first (ssh-keygen -R '{name}' -f {known_hosts})"
        )
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with os.fdopen(fd, "ab") as f:
        needs_newline = f.tell() > 0 and not known_hosts.read_bytes().endswith(b"\n")
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        f.write((("\n" if needs_newline else "") + line).encode("ascii"))
        f.flush()
        os.fsync(f.fileno())
    log.info(
        "known_host_added",
        file=str(known_hosts),
        host=host,
        port=port,
        key_type=key.get_name(),
        fingerprint=fingerprint(key),
    )


