"""Text from outside (drop names, reasons, reply labels) made safe for a terminal.

A file name may hold a newline (a fake row in `flad status`), an escape sequence (a
changed terminal title, hidden text) or a bidirectional override (a name that reads
backwards). Such characters are shown escaped, as Python writes them, and the rest is
left alone so that accents and other scripts read as written.
"""

from __future__ import annotations

import unicodedata

#: Control (Cc), format (Cf: bidi overrides, zero-width), separators of lines and
#: paragraphs, and lone surrogates (undecodable bytes of a file name).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def printable(text: str) -> str:
    """`text` with every character a terminal would act on written as an escape."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c
                   for c in text)


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
