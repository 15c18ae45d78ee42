"""The platform's facts about environments: their letters and remote folders, pure.

Three environments travel on one channel: production (``R``: ``IN`` / ``OUT``), test
(``T``: ``INTEST`` / ``OUTTEST``) and the declaration test (``S``: ``INTEST-S`` /
``OUTTEST-S``; the error list refuses an ``S`` file outside ``INTEST-S``, ACRF-257).
Locally each has a drop folder ``<outbox>/<environment>/<app>/`` and an inbox folder
``<inbox>/<environment>/``. Not every server has the ``S`` folders: they are optional,
so a server without them is no error for the other environments.
"""

from __future__ import annotations

__all__ = ["ENVIRONMENTS", "ENV_LETTER", "OPTIONAL_FOLDERS", "REMOTE_IN", "REMOTE_OUT"]

#: Local environment names, as folder names under the outbox and the inbox.
ENVIRONMENTS = ("test", "simulation", "production")
ENV_LETTER = {"test": "T", "simulation": "S", "production": "R"}
REMOTE_IN = {"test": "INTEST", "simulation": "INTEST-S", "production": "IN"}
REMOTE_OUT = {"test": "OUTTEST", "simulation": "OUTTEST-S", "production": "OUT"}
#: Remote folders a server may lack: their absence concerns their environment only.
OPTIONAL_FOLDERS = frozenset({REMOTE_IN["simulation"], REMOTE_OUT["simulation"]})
