"""The platform's list of ACRF error codes, read from the admin's copy, for their labels.

flad ships no copy of that list (it is the platform's text): `[daemon] error_codes` names
the file as downloaded from the portal. Without it, codes are shown alone. Its own
module, so that `flad check` reads it without importing the reply poller.
"""

from __future__ import annotations

from pathlib import Path

from flad import replyparse


def load_error_labels(path: Path | None) -> tuple[dict[str, str], str | None]:
    """The labels of `[daemon] error_codes`, or ({}, why not) when they cannot be read."""
    if path is None:
        return {}, None
    try:
        return replyparse.parse_error_codes(path.read_bytes()), None
    except (OSError, ValueError) as exc:
        return {}, f"{path}: {getattr(exc, 'strerror', None) or exc}"
