"""Builds real configuration files for tests: folders, 0600 keys, TOML text."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

VALID_COMPANY = "0123456749"
OTHER_COMPANY = "0202239951"


def enterprise_number(first8: int) -> str:
    """A valid enterprise number from its first eight digits (mod-97 check)."""
    return f"{first8:08d}{97 - first8 % 97:02d}"


def ssh_key(path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(value)


def to_toml(daemon: dict[str, Any], channels: list[dict[str, Any]]) -> str:
    lines = ["[daemon]"] + [f"{k} = {_toml_value(v)}" for k, v in daemon.items()]
    for ch in channels:
        lines += ["", "[[channel]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in ch.items()
                  if k not in ("sftp", "signing", "application")]
        if "sftp" in ch:
            lines += ["[channel.sftp]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in ch["sftp"].items()]
        if "signing" in ch:
            lines += ["[channel.signing]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in ch["signing"].items()]
        for app in ch.get("application", []):
            lines += ["[[channel.application]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in app.items()]
    return "\n".join(lines) + "\n"


def channel(tmp: Path, name: str = "acme", *, quality: str = "employer",
            company_id: str = VALID_COMPANY, sender_id: str = "6400",
            host: str = "127.0.0.1", port: int = 8022, username: str | None = None,
            key: Path | None = None, **extra: Any) -> dict[str, Any]:
    base = tmp / name
    base.mkdir(parents=True, exist_ok=True)
    if key is None:
        key = base / "id_ed25519"
        if not key.exists():
            ssh_key(key)
    ch: dict[str, Any] = {
        "name": name, "quality": quality, "company_id": company_id, "sender_id": sender_id,
        "outbox": base / "outbox", "inbox": base / "inbox",
        "sftp": {"host": host, "port": port, "username": username or f"EXP_{name.upper()}",
                 "private_key": key, "known_hosts": tmp / "known_hosts"},
        "application": [{"name": "fla", "code": "FLAX"}],
    }
    ch.update(extra)
    return ch


def write(tmp: Path, channels: list[dict[str, Any]], **daemon: Any) -> Path:
    daemon.setdefault("state_dir", tmp / "state")
    path = tmp / "flad.toml"
    path.write_text(to_toml(daemon, channels), encoding="utf-8")
    return path
