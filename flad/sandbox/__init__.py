"""A local stand-in for the social-security SFTP batch channel, for tests and demos.

It speaks only the protocol (SFTP folders, file names, FS signatures, ACRF and
NOTIFICATION replies) and knows nothing of flad's journal, pipeline or daemon, so that what works
against it works for the same reasons against the platform. Modules:

- :mod:`~flad.sandbox.sftp_server`: the SFTP server (paramiko), confined to its root;
- :mod:`~flad.sandbox.transfer_point`: the checks run on each GO, and the ErrorID table;
- :mod:`~flad.sandbox.replies`: the ACRF and NOTIFICATION bodies (official layouts) and
  how reply sets are written;
- :mod:`~flad.sandbox.credentials`: host key, reply certificate, authorized keys;
- :mod:`~flad.sandbox.service`: :func:`start_sandbox`, the in-process entry point;
- :mod:`~flad.sandbox.command`: the ``flad sandbox`` command, imported on first use of
  ``flad.sandbox.command`` (not at package import, so that ``python -m
  flad.sandbox.command`` runs without a double-import warning).
"""

from __future__ import annotations

import importlib
import types

from flad.sandbox.service import Sandbox, SandboxError, start_sandbox

__all__ = ["Sandbox", "SandboxError", "start_sandbox"]


def __getattr__(name: str) -> types.ModuleType:
    """``flad.sandbox.command`` on first use, so that ``-m flad.sandbox.command`` stays clean."""
    if name == "command":
        return importlib.import_module("flad.sandbox.command")
    raise AttributeError(f"module 'flad.sandbox' has no attribute {name!r}")
