"""What every command shares: exit codes and loading the configuration it is given."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flad import config as config_mod

__all__ = ["EXIT_OK", "EXIT_PROBLEM", "EXIT_USAGE", "Subparsers", "load_config", "with_config"]

#: 0 all well, 1 a problem the command found (a refused file, a failed connection),
#: 2 the command could not start (bad flags, a configuration that does not load).
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

#: `ArgumentParser.add_subparsers()`'s result, which each command module adds itself to.
Subparsers = Any


def load_config(path: str) -> config_mod.Config:
    """The configuration, or exit 2 after printing each of its problems on one line."""
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def with_config(p: argparse.ArgumentParser) -> None:
    """The `-c CONFIG` flag of the commands that work on a configured installation."""
    p.add_argument("-c", "--config", required=True, metavar="CONFIG",
                   help="flad's TOML configuration file")
