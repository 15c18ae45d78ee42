"""`flad init`: set up one channel the way "Etablir le canal batch" describes it.

Setting up the batch channel is mostly portal work (registration, Chaman access,
mandates, the FLA permission) that flad cannot do; what it can do is make the two files
Chaman asks for (the public SSH key, the certificate as .cer), refuse the set-up the
platform would refuse (a second SFTP channel for one quality), write a configuration
block that loads, and print the portal steps for the company's quality in the order
of the official guide, each naming its section.

Rooms: `guide` (the guide's steps as data), `steps` (them filled in and printed),
`request` (the answers and their checks), `questions` (asking on a terminal),
`existing` (one channel per quality), `sshkey`, `certificate`, `configfile` (the TOML,
proved before it is written) and `setup` (the order of it all). The command itself is
`flad.cli.init`.
"""

from __future__ import annotations

from importlib import resources

from flad.init.guide import DEFAULT_HOST, FLA_APPLICATION, FLA_PERMISSION, QUALITY_LABELS
from flad.init.questions import gather
from flad.init.request import (
    DEFAULT_PORT,
    DEFAULT_RSA_BITS,
    DEFAULT_STATE_DIR,
    KEY_TYPES,
    InitError,
    InitRequest,
)
from flad.init.setup import InitResult, init_channel, run_init
from flad.init.steps import (
    ChecklistContext,
    ChecklistItem,
    checklist,
    explain,
    render_checklist,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_RSA_BITS",
    "DEFAULT_STATE_DIR",
    "FLA_APPLICATION",
    "FLA_PERMISSION",
    "KEY_TYPES",
    "QUALITY_LABELS",
    "ChecklistContext",
    "ChecklistItem",
    "InitError",
    "InitRequest",
    "InitResult",
    "checklist",
    "example_configuration",
    "explain",
    "gather",
    "init_channel",
    "render_checklist",
    "run_init",
]


def example_configuration() -> str:
    """config.example.toml as installed with flad (package data), for --print-example."""
    return (resources.files("flad") / "data" / "config.example.toml").read_text(
        encoding="utf-8")
