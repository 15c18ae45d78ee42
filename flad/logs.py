"""Structured logs: JSON lines for journald and log shippers, readable lines on a terminal.

Event names are stable (`file_claimed`, `go_sent`, ...) so that operators can alert on
them; every line carries the channel and, where one exists, the submission.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from flad.printable import printable

_REDACT = ("passphrase", "password", "secret", "private_key_data")


def _printable(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """On a terminal, a hostile name never writes an escape sequence or a fake line.

    (JSON lines escape such characters by themselves.)"""
    for key, value in event.items():
        if isinstance(value, str) and key != "exception":  # flad's own traceback
            event[key] = printable(value)
    return event


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A safety net: a secret passed to a log call by mistake never reaches the output."""
    for key in event:
        if any(word in key.lower() for word in _REDACT):
            event[key] = "***"
    return event


class _Writer:
    """Writes one line per event; a broken or closed stream never breaks the caller.

    A journald restart or a closed terminal must not take a channel worker down with it.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stderr
        try:
            stream.write(message + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def configure(log_format: str = "auto", level: str = "info",
              stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    # paramiko logs multi-line tracebacks for every dropped connection; flad reports
    # those faults itself, on one line
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    use_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    renderer: Any = (structlog.processors.JSONRenderer(sort_keys=False) if use_json
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            *(() if use_json else (_printable,)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_: _Writer(stream),
        cache_logger_on_first_use=False,
    )


def get(name: str = "flad") -> Any:
    return structlog.get_logger(name)
