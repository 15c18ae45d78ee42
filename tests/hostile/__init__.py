"""A corpus of hostile (and one friendly) XML files, for every suite that feeds flad input.

``corpus(tmp_dir)`` writes the files and returns name -> path. Most files are the
stand-in FLA sample (``flad/data/sample-fla.xml``) with one hostile feature added,
so that the feature, and nothing else, is what gets a file refused. Entity attacks
point at a canary file in ``tmp_dir`` (see ``canary_path``): its text must never
show up anywhere, and :class:`FileOpenWatch` can prove it was never even opened.

``ACCEPTED`` names the files that must pass; ``EXPECTED_REASONS`` gives, for every
other file, a fragment of the reason ``flad.xmlcheck`` gives for it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from importlib import resources
from pathlib import Path
from types import TracebackType

__all__ = [
    "ACCEPTED",
    "CANARY_TEXT",
    "EXPECTED_REASONS",
    "OVERSIZE_BYTES",
    "FileOpenWatch",
    "canary_path",
    "corpus",
    "sample_bytes",
]

CANARY_TEXT = "flad-canary-5e1d: an XML parser read a file it had no business reading"
OVERSIZE_BYTES = 101 * 1024 * 1024  # one MiB above flad's default limit of 100 MiB
DEFAULT_HTTP_URL = "http://127.0.0.1:9/x"  # the discard port: nothing should ever connect

ACCEPTED = frozenset({"utf8_bom"})

# Fragments of flad.xmlcheck's reasons (str(XmlRejected)), for the files it refuses.
_ENTITIES = "DOCTYPE with entity declarations"
EXPECTED_REASONS: dict[str, str] = {
    "xxe_file_passwd": _ENTITIES,
    "xxe_file_canary": _ENTITIES,
    "xxe_http": _ENTITIES,
    "external_dtd_http": "declares a DOCTYPE",
    "parameter_entities": _ENTITIES,
    "billion_laughs": _ENTITIES,
    "quadratic_blowup": _ENTITIES,
    "doctype_no_entities": "declares a DOCTYPE",
    "utf7_hidden_doctype": "UTF-7",
    "utf16": "UTF-16",
    "non_utf8": "not valid UTF-8",
    "non_utf8_undeclared": "not valid UTF-8",
    "nul_bytes": "NUL byte",
    "not_well_formed": "not well-formed XML: line 9, column",
    "empty": "the file is empty",
    "oversize_101mib": f"file is {OVERSIZE_BYTES} bytes, larger than the limit of",
    "deep_nesting": "levels deep",
    "huge_text_node": "text value too long",
}

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_ROOT_OPEN = '<FLADeclaration xmlns="urn:flad:standin:fla:1">'
_HOURS = "<Hours>7.5</Hours>"


def sample_bytes() -> bytes:
    """The valid stand-in FLA sample shipped with flad."""
    return (resources.files("flad") / "data" / "sample-fla.xml").read_bytes()


def canary_path(tmp_dir: Path) -> Path:
    """Where ``corpus(tmp_dir)`` puts the file that entity attacks try to read."""
    return tmp_dir / "canary.txt"


def _sample() -> str:
    text = sample_bytes().decode("utf-8")
    assert text.startswith(_DECLARATION) and _ROOT_OPEN in text and _HOURS in text
    return text


def _with_doctype(doctype: str, anomaly: str | None = None) -> str:
    """The sample with a DOCTYPE after the declaration and, optionally, an Anomaly."""
    text = _sample().replace(_DECLARATION, f"{_DECLARATION}\n{doctype}", 1)
    if anomaly is not None:
        text = text.replace(_HOURS, f"{_HOURS}\n    <Anomaly>{anomaly}</Anomaly>", 1)
    return text


def _with_anomaly_bytes(anomaly: bytes, *, keep_declaration: bool = True) -> bytes:
    """The sample with an Anomaly holding raw bytes (which need not be valid UTF-8)."""
    text = _sample().encode("utf-8")
    hours = _HOURS.encode()
    text = text.replace(hours, hours + b"\n    <Anomaly>" + anomaly + b"</Anomaly>", 1)
    if not keep_declaration:
        text = text.replace(_DECLARATION.encode() + b"\n", b"", 1)
    return text


def _utf7_markup(text: str) -> str:
    """UTF-7 for the markup characters, so that no ASCII '<' or '!' betrays the DOCTYPE."""
    return (
        text.replace("+", "+-")
        .replace("<", "+ADw-")
        .replace(">", "+AD4-")
        .replace("!", "+ACE-")
        .replace("&", "+ACY-")
    )


def _billion_laughs() -> str:
    lines = ['<!ENTITY lol0 "lol">']
    for level in range(1, 10):
        lines.append(f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">')
    return _with_doctype("<!DOCTYPE FLADeclaration [\n" + "\n".join(lines) + "\n]>", "&lol9;")


def _write_oversize(path: Path) -> None:
    """A valid-looking file of exactly OVERSIZE_BYTES: the sample padded inside a comment."""
    head = (_sample().replace(_ROOT_OPEN, _ROOT_OPEN + "\n<!--", 1)).encode("utf-8")
    cut = head.index(b"<!--") + len(b"<!--")
    head, tail = head[:cut], b"-->" + head[cut:]
    padding = OVERSIZE_BYTES - len(head) - len(tail)
    chunk = b" " * (8 * 1024 * 1024)
    with path.open("wb") as out:
        out.write(head)
        while padding > 0:
            out.write(chunk[: min(padding, len(chunk))])
            padding -= len(chunk)
        out.write(tail)


def corpus(tmp_dir: Path, *, http_url: str = DEFAULT_HTTP_URL) -> dict[str, Path]:
    """Write the hostile corpus (and the canary) into tmp_dir; return name -> path.

    ``http_url`` is where the network attacks point; a test may pass the address of
    a listening socket of its own to prove nothing ever connects.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    canary = canary_path(tmp_dir)
    canary.write_text(CANARY_TEXT + "\n", encoding="utf-8")
    canary_url = canary.resolve().as_uri()
    sample = _sample()

    files: dict[str, bytes | str] = {
        "xxe_file_passwd": _with_doctype(
            '<!DOCTYPE FLADeclaration [<!ENTITY x SYSTEM "file:///etc/passwd">]>', "&x;"
        ),
        "xxe_file_canary": _with_doctype(
            f'<!DOCTYPE FLADeclaration [<!ENTITY x SYSTEM "{canary_url}">]>', "&x;"
        ),
        "xxe_http": _with_doctype(
            f'<!DOCTYPE FLADeclaration [<!ENTITY x SYSTEM "{http_url}">]>', "&x;"
        ),
        "external_dtd_http": _with_doctype(f'<!DOCTYPE FLADeclaration SYSTEM "{http_url}.dtd">'),
        "parameter_entities": _with_doctype(
            "<!DOCTYPE FLADeclaration [\n"
            f'<!ENTITY % local SYSTEM "{canary_url}">\n'
            f'<!ENTITY % remote SYSTEM "{http_url}.dtd">\n'
            "%local;\n%remote;\n]>"
        ),
        "billion_laughs": _billion_laughs(),
        "quadratic_blowup": _with_doctype(
            f'<!DOCTYPE FLADeclaration [<!ENTITY a "{"A" * 1_000_000}">]>', "&a;" * 500_000
        ),
        "doctype_no_entities": _with_doctype("<!DOCTYPE FLADeclaration>"),
        "utf7_hidden_doctype": '<?xml version="1.0" encoding="UTF-7"?>'
        + _utf7_markup(
            _with_doctype(
                f'<!DOCTYPE FLADeclaration [<!ENTITY x SYSTEM "{canary_url}">]>', "&x;"
            ).replace(_DECLARATION, "", 1)
        ),
        "utf16": sample.replace('encoding="UTF-8"', 'encoding="UTF-16"', 1).encode("utf-16"),
        "non_utf8": _with_anomaly_bytes(b"Caf\xe9 (Latin-1 byte in a UTF-8 file)"),
        "non_utf8_undeclared": _with_anomaly_bytes(b"Caf\xe9", keep_declaration=False),
        "nul_bytes": _with_anomaly_bytes(b"before\x00after"),
        "utf8_bom": b"\xef\xbb\xbf" + sample.encode("utf-8"),
        "not_well_formed": sample.replace(_HOURS, "<Hours>7.5</Hour>", 1),
        "empty": b"",
        "deep_nesting": sample.replace(
            _ROOT_OPEN, _ROOT_OPEN + "<a>" * 100_000 + "</a>" * 100_000, 1
        ),
        "huge_text_node": _with_anomaly_bytes(b"x" * 11_000_000),
    }
    paths: dict[str, Path] = {}
    for name, content in files.items():
        path = tmp_dir / f"{name}.xml"
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        paths[name] = path
    oversize = tmp_dir / "oversize_101mib.xml"
    _write_oversize(oversize)
    paths["oversize_101mib"] = oversize
    return paths


class FileOpenWatch:
    """Linux inotify watch that tells whether anything opened or read one file.

    Stronger than looking for the file's text in a message: it sees libxml2's own
    reads, which happen in C, outside Python. Raises OSError where inotify is missing.
    """

    _IN_ACCESS = 0x00000001
    _IN_OPEN = 0x00000020
    _EVENT = struct.Struct("iIII")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self.events: list[int] = []

    def __enter__(self) -> FileOpenWatch:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd = fd
        watch = int(
            libc.inotify_add_watch(fd, os.fsencode(self.path), self._IN_OPEN | self._IN_ACCESS)
        )
        if watch < 0:
            os.close(fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {self.path}")
        return self

    def _drain(self) -> None:
        while True:
            try:
                buffer = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            offset = 0
            while offset + self._EVENT.size <= len(buffer):
                _wd, mask, _cookie, length = self._EVENT.unpack_from(buffer, offset)
                self.events.append(mask)
                offset += self._EVENT.size + length

    @property
    def opened(self) -> bool:
        """True if the file was opened or read since the watch started."""
        if self._fd >= 0:
            self._drain()
        return bool(self.events)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd >= 0:
            self._drain()
            os.close(self._fd)
            self._fd = -1
