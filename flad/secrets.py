"""Reading secrets: passphrase files and systemd credentials, in one place.

Secrets never live in the configuration; they come from a file the configuration names
(`passphrase_file`, `proxy_credentials_file`) or from a systemd credential
(`LoadCredential=` in the unit, read from `$CREDENTIALS_DIRECTORY`). The service's
configuration, `flad sign` and `flad init` read them through this module, so a trailing
newline, a missing file or a credential without its directory mean the same thing to
each of them. Errors name the file, never its content.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SecretError", "credential_path", "read_secret_file"]


class SecretError(Exception):
    """A secret cannot be read; the text names where it was looked for, never the secret."""


def read_secret_file(path: str | os.PathLike[str], what: str = "passphrase file") -> bytes:
    """The secret held by `path`, without its trailing line break (editors add one).

    `what` names the file in the error ("passphrase file", "--passphrase-file").
    """
    try:
        return Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SecretError(f"cannot read {what} {os.fspath(path)}: {reason}") from None


def credential_path(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where systemd put credential `name` for this process (`$CREDENTIALS_DIRECTORY`).

    `environ` is the process environment unless a test gives its own.
    """
    directory = (os.environ if environ is None else environ).get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretError(f"credential {name!r} asked for but $CREDENTIALS_DIRECTORY is not "
                          "set (LoadCredential= in the systemd unit provides it)")
    if "/" in name or name in ("", ".", ".."):
        raise SecretError("must be a plain credential name")
    return Path(directory) / name
