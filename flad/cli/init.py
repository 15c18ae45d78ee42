"""`flad init`: set up one channel (see flad.setup_assistant)."""

from __future__ import annotations

from flad.setup_assistant import add_parser

__all__ = ["add_parser"]
