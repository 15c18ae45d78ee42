"""Hardened XML checks for the files flad sends: parse, XSD, root element, identities.

The files come from payroll software we do not control and are read by a
long-running service, so every byte is treated as hostile: the size is capped
before parsing, the encoding is checked before libxml2 sees the bytes, any
DOCTYPE is refused (payroll XML never needs one, and it is the door for XXE,
billion laughs and quadratic blow-up), and the parser itself loads no DTD,
expands no entity, touches no network and keeps libxml2's size and depth limits.
Every refusal is an :class:`XmlRejected` whose text is one line a payroll clerk
can act on.

Where the identities stand in an FLA file is not public here (the official FLA
layout and XSD are not published where flad is built), so the defaults below are
stand-ins matching ``flad/data/standin-fla.xsd`` and are meant to be overridden
per application in the configuration:

- ``DEFAULT_EMPLOYER_XPATH`` = ``//*[local-name()='EmployerId']``
- ``DEFAULT_SENDER_XPATH`` = ``//*[local-name()='SenderId']``

They match on local names so that they work whatever namespace the file uses.

Files can be large (tens of MiB), so :func:`check_document` avoids work that
cannot change its verdict: with the default identity XPaths it parses without
comments and processing instructions (neither the XSD nor an element's string
value looks at them) and finds both identities in one walk of the tree instead of
two XPath runs. A rejection that comments could have shaped is decided again on a
comment-keeping parse, so verdicts and reasons are exactly those of the plain path.

The module is pure: it takes bytes and values and returns values; only
:func:`load_schema` reads files (the XSD and what it includes), never the network.
"""

from __future__ import annotations

import codecs
import os
import re
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from lxml import etree

from flad.identity import EmployerRef, FormIdentity
from flad.profiles import Profile

__all__ = [
    "DEFAULT_EMPLOYER_XPATH",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_SENDER_XPATH",
    "CheckedDocument",
    "XmlRejected",
    "XsdUnusable",
    "check_document",
    "check_xpath",
    "load_schema",
    "parse_hardened",
]

DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024
#: Files at least this big, checked with the default identity XPaths, are validated
#: as a stream (their tree is not kept): see _accept_streaming.
STREAM_BYTES = 16 * 1024 * 1024
_STREAM_CHUNK = 1024 * 1024
#: A form whose bytes exceed this is not validated on its own (its tree would be kept
#: whole): the file is then validated as one stream instead. See _split_check.
SPLIT_FORM_BYTES = 4 * 1024 * 1024
# The root's start tag, where the prolog ends: an optional prefix, then the local name.
_ROOT_NAME = re.compile(rb"<(?:[^\s/>:]+:)?(?P<local>[^\s/>:]+)")
DEFAULT_EMPLOYER_XPATH = "//*[local-name()='EmployerId']"
DEFAULT_SENDER_XPATH = "//*[local-name()='SenderId']"

# How many XSD errors make it into one reason: enough to fix the file, short enough to read.
_MAX_SCHEMA_ERRORS = 3
# A reason longer than this is cut: it ends up in one log line and one rejected/ note.
_MAX_REASON_CHARS = 1000
# libxml2's own limits without XML_PARSE_HUGE (huge_tree=False); named for the messages.
_LIBXML_MAX_DEPTH = 256

# Encodings whose bytes below 0x80 are plain ASCII: for these (and only these) the
# byte-level prolog scan below sees exactly what the parser will see. UTF-7, UTF-16,
# EBCDIC and friends could hide a DOCTYPE from that scan, so they are refused.
_ASCII_COMPATIBLE_ENCODINGS = frozenset(
    {"UTF-8", "UTF8", "US-ASCII", "ASCII", "LATIN1", "LATIN-1"}
    | {f"ISO-8859-{n}" for n in (*range(1, 12), *range(13, 17))}
    | {f"ISO8859-{n}" for n in (*range(1, 12), *range(13, 17))}
    | {f"WINDOWS-{n}" for n in range(1250, 1259)}
    | {f"CP{n}" for n in range(1250, 1259)}
)
_UTF8_NAMES = frozenset({"UTF-8", "UTF8"})
# UTF-8 is checked in slices of this size: a 50 MiB file never becomes a 50-200 MiB str.
_UTF8_CHUNK = 1024 * 1024

_BOM_UTF8 = b"\xef\xbb\xbf"
_WIDE_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"),
    (b"\xff\xfe", "UTF-16"),
)
_XML_WHITESPACE = b" \t\r\n"
_ENCODING_PSEUDO_ATTR = re.compile(rb"""\bencoding\s*=\s*(["'])([^"']*)\1""")
# A Clark-notation namespace in libxml2 messages ("{urn:x}Hours"): noise for a clerk.
_CLARK_NAMESPACE = re.compile(r"\{[^\s{}']+\}(?=[A-Za-z_])")
# lxml appends ", line N, column M" to syntax messages; the reason says it once, itself.
_TRAILING_POSITION = re.compile(r",\s*line \d+, column \d+\s*$")
_TAG_MISMATCH = re.compile(
    r"Opening and ending tag mismatch: (?P<open>\S+) line (?P<at>\d+) and (?P<closing>\S+)")
_LINE_AT_END = re.compile(r" line (?P<at>\d+)$")
_PREMATURE_END = re.compile(r"Premature end of data in tag (?P<open>\S+) line (?P<at>\d+)")

# lxml's XMLSchema keeps its error_log on the instance: two threads validating with
# the same schema would mix their errors; and libxml2 compiling two schemas at once
# fails with internal errors. Both go through this lock.
_SCHEMA_LOCK = threading.Lock()


class XmlRejected(Exception):
    """A file (or an XSD, or an XPath) flad refuses, with one line saying why.

    The reason goes to a log line and to the rejected/ folder, where a payroll clerk
    reads it: newlines and other control characters from libxml2 or from the file are
    flattened so that ``str(e)`` is always exactly one printable line.
    """

    def __init__(self, reason: str) -> None:
        self.reason = _one_line(reason)
        super().__init__(self.reason)

    def __str__(self) -> str:
        return self.reason


class XsdUnusable(XmlRejected, ValueError):
    """The operator's XSD cannot be loaded; the message names its path.

    Both a ValueError (it is a configuration problem, found at load) and an
    XmlRejected (no file can pass a check against it), so that a caller catching
    either kind stops on it instead of crashing.
    """


@dataclass(frozen=True)
class CheckedDocument:
    """What the rest of flad needs from a file that passed every check."""

    root_tag: str
    """Local name of the root element (no namespace)."""
    employers: tuple[str, ...]
    """Stripped text of every node the employer XPath selected, in document order."""
    senders: tuple[str, ...]
    """Same for the sender XPath."""
    forms: tuple[FormIdentity, ...] = field(default=(), compare=False)
    """Every form and the employers it names: by the profile's layout, or (without a
    profile, or with a configured employer XPath) one pseudo-form for the whole file
    (position 0) holding what the employer XPath selected."""


def _one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) and mask unprintable characters."""
    flat = " ".join(text.split())
    flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    if len(flat) > _MAX_REASON_CHARS:
        flat = flat[: _MAX_REASON_CHARS - 1] + "…"
    return flat


def _line_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and character column of a byte offset (for messages only)."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, column


def _refuse_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise XmlRejected(f"file is {size} bytes, larger than the limit of {max_bytes} bytes")


def _refuse_bad_encoding(data: bytes) -> int:
    """Refuse bytes the prolog scan could misread; return where the markup starts.

    The later DOCTYPE scan works on bytes, which is only sound when bytes below 0x80
    are ASCII. So wide encodings, NUL bytes, unknown encodings and (for UTF-8, the
    XML default) invalid UTF-8 are refused here, each with a one-line reason.
    """
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            raise XmlRejected(f"the file is encoded in {name}; save it as UTF-8")
    if len(data) >= 2 and (data[0] == 0 or data[1] == 0):
        raise XmlRejected("the file looks encoded in UTF-16 or UTF-32; save it as UTF-8")
    nul = data.find(b"\x00")
    if nul != -1:
        line, column = _line_column(data, nul)
        raise XmlRejected(
            f"the file contains a NUL byte at line {line}, column {column}; "
            "it is not a text XML file"
        )

    has_bom = data.startswith(_BOM_UTF8)
    start = len(_BOM_UTF8) if has_bom else 0
    first = start
    while first < len(data) and data[first] in _XML_WHITESPACE:
        first += 1
    if first == len(data):
        raise XmlRejected("the file contains no XML, only whitespace")
    if data[first : first + 1] != b"<":
        line, column = _line_column(data, first)
        raise XmlRejected(
            f"the file is not XML: line {line}, column {column}: "
            "it does not start with '<' (or uses an unsupported encoding)"
        )

    declared: str | None = None
    if data.startswith(b"<?xml", start) and data[start + 5 : start + 6] in (
        b" ",
        b"\t",
        b"\r",
        b"\n",
    ):
        end = data.find(b"?>", start, start + 4096)
        declaration = data[start : end if end != -1 else start + 4096]
        found = _ENCODING_PSEUDO_ATTR.search(declaration)
        if found is not None:
            declared = found.group(2).decode("ascii", errors="replace")
    normalized = declared.strip().upper().replace("_", "-") if declared is not None else None

    if normalized is not None and normalized not in _ASCII_COMPATIBLE_ENCODINGS:
        raise XmlRejected(
            f"the file declares encoding {declared!r}, which flad does not accept; save it as UTF-8"
        )
    if has_bom and normalized is not None and normalized not in _UTF8_NAMES:
        raise XmlRejected(
            f"the file starts with a UTF-8 byte-order mark but declares encoding {declared!r}"
        )
    if (has_bom or normalized is None or normalized in _UTF8_NAMES) and not _is_utf8(data):
        try:
            data.decode("utf-8")  # only to find where: _is_utf8 said it fails
        except UnicodeDecodeError as exc:
            line, column = _line_column(data, exc.start)
            said = "declares UTF-8" if normalized is not None else "declares no encoding (so UTF-8)"
            raise XmlRejected(
                f"the file is not valid UTF-8: byte 0x{data[exc.start]:02X} at line {line}, "
                f"column {column}; the file {said}: save it as UTF-8 "
                "or declare its real encoding"
            ) from None
    return first


def _is_utf8(data: bytes) -> bool:
    """Whether the bytes are valid UTF-8, without decoding the whole file into one str.

    ASCII (most payroll files) is answered by one fast scan; anything else is decoded
    slice by slice with an incremental decoder, which accepts exactly what
    ``data.decode("utf-8")`` accepts but holds one slice in memory, not the file.
    """
    if data.isascii():
        return True
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for offset in range(0, len(view), _UTF8_CHUNK):
            decoder.decode(view[offset : offset + _UTF8_CHUNK])
        decoder.decode(b"", True)
    except UnicodeDecodeError:
        return False
    return True


def _scan_prolog(data: bytes, start: int) -> int:
    """Refuse any DOCTYPE before the root element, before libxml2 reads a byte of it.

    Payroll XML never needs a DOCTYPE, and every entity attack (XXE by file or
    http, parameter entities, billion laughs, quadratic blow-up) needs one. Only
    the prolog is scanned: whitespace, the XML declaration, comments and PIs.
    Returns where the scan stopped (the root element, or what the parser will
    report), so that check_document knows whether comments follow the prolog.
    """
    pos = start
    size = len(data)
    while pos < size:
        byte = data[pos]
        if byte in _XML_WHITESPACE:
            pos += 1
        elif data.startswith(b"<?", pos):
            end = data.find(b"?>", pos + 2)
            if end == -1:
                return pos  # unterminated: the parser will say where
            pos = end + 2
        elif data.startswith(b"<!--", pos):
            end = data.find(b"-->", pos + 4)
            if end == -1:
                return pos
            pos = end + 3
        elif data.startswith(b"<!DOCTYPE", pos):
            subset_end = data.find(b"]>", pos)
            subset = data[pos : subset_end if subset_end != -1 else size]
            line, _ = _line_column(data, pos)
            if b"<!ENTITY" in subset:
                raise XmlRejected(
                    f"the file declares a DOCTYPE with entity declarations (line {line}); "
                    "refused for safety: payroll XML never needs one"
                )
            raise XmlRejected(
                f"the file declares a DOCTYPE (line {line}); entity declarations are "
                "refused for safety and payroll XML never needs a DOCTYPE"
            )
        else:
            return pos  # the root element (or garbage the parser will report)
    return pos


# Every parser of an untrusted file: nothing loaded, nothing expanded, no huge nodes.
_HARDENED: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "attribute_defaults": False,
    "huge_tree": False,
    "collect_ids": False,
}


def _new_parser(*, keep_comments: bool = True) -> etree.XMLParser:
    """A fresh hardened parser: lxml parsers must not be shared between threads.

    ``keep_comments=False`` drops comments and processing instructions while
    parsing, which is cheaper in time and memory; every safety setting is the same.
    """
    parser = etree.XMLParser(
        **_HARDENED, remove_comments=not keep_comments, remove_pis=not keep_comments)
    # Belt and braces: should libxml2 ever ask for an external resource anyway,
    # it gets nothing from disk or network.
    parser.resolvers.add(_RefuseAllResolver())
    return parser


class _RefuseAllResolver(etree.Resolver):
    """Answers every external load of a payroll file with an empty document."""

    def resolve(  # type: ignore[override]
        self, system_url: str | None, public_id: str | None, context: Any
    ) -> Any:
        return self.resolve_string("", context, base_url=None)


def _syntax_reason(exc: etree.XMLSyntaxError) -> str:
    """Turn libxml2's message into 'where and what', naming the safety limits plainly."""
    line, column = exc.position
    message = str(getattr(exc, "msg", "") or exc)
    message = _TRAILING_POSITION.sub("", message)
    where = f"line {line}, column {column}"
    if "Excessive depth" in message:
        return (
            f"the file nests elements more than {_LIBXML_MAX_DEPTH} levels deep ({where}); "
            "refused for safety"
        )
    if "Text node too long" in message or "Resource limit exceeded" in message:
        return f"the file has a text value too long for safety ({where})"
    if "amplification" in message:
        return f"the file expands entities beyond the safety limit ({where})"
    return f"the file is not well-formed XML: {where}: {_plain_tags(message, line)}"


def _plain_tags(message: str, line: int) -> str:
    """libxml2 names the line a tag opened on; say it once, and not when it is `line`."""
    def opened(at: str) -> str:
        return "on the same line" if int(at) == line else f"on line {at}"

    mismatch = _TAG_MISMATCH.fullmatch(message)
    if mismatch:
        return (f"</{mismatch['closing']}> closes <{mismatch['open']}>, which was opened "
                f"{opened(mismatch['at'])}")
    premature = _PREMATURE_END.fullmatch(message)
    if premature:
        return (f"the file ends inside <{premature['open']}>, opened "
                f"{opened(premature['at'])}")
    at_end = _LINE_AT_END.search(message)  # "... Start Tag Wor line 7": where it opened
    if at_end:
        return message[:at_end.start()] + (
            "" if int(at_end["at"]) == line else f", opened {opened(at_end['at'])}")
    return message


def parse_hardened(data: bytes, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> etree._ElementTree:
    """Parse untrusted XML bytes, or raise :class:`XmlRejected` with a one-line reason.

    The checks run cheapest first, so that a hostile file is refused before libxml2
    spends time or memory on it: size, encoding, DOCTYPE, then the parse itself with
    a parser that cannot load anything, then a second DOCTYPE check on the tree.
    """
    data, _ = _gate(data, max_bytes)
    return _parse_checked(data, keep_comments=True)


def _gate(data: bytes, max_bytes: int) -> tuple[bytes, int]:
    """The checks before libxml2 sees a byte: size, encoding, DOCTYPE in the prolog.

    Returns the bytes (as bytes: a bytes object is not copied) and where the prolog
    ends. Raises :class:`XmlRejected` with the reason, TypeError for a non-bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"parse_hardened wants bytes, not {type(data).__name__}")
    data = bytes(data)
    _refuse_size(len(data), max_bytes)
    if not data:
        raise XmlRejected("the file is empty")
    start = _refuse_bad_encoding(data)
    return data, _scan_prolog(data, start)


def _parse_checked(data: bytes, *, keep_comments: bool) -> etree._ElementTree:
    """The libxml2 parse and the tree's DOCTYPE check, for bytes that passed the gates.

    Only for bytes that already passed the size, encoding and prolog checks of
    :func:`parse_hardened` (or of :func:`check_document`, which runs the same ones).
    """
    try:
        root = etree.fromstring(data, _new_parser(keep_comments=keep_comments))
    except etree.XMLSyntaxError as exc:
        raise XmlRejected(_syntax_reason(exc)) from None
    tree = root.getroottree()
    if _declares_doctype(tree):
        raise XmlRejected(
            "the file declares a DOCTYPE; entity declarations are refused for safety "
            "and payroll XML never needs a DOCTYPE"
        )
    return tree


def _declares_doctype(tree: etree._ElementTree) -> bool:
    """The parsed tree's own word on a DOCTYPE, after the byte scan of the prolog."""
    docinfo = cast("Any", tree.docinfo)  # the stubs lack DocInfo.doctype
    return bool(docinfo.doctype or docinfo.internalDTD is not None
                or docinfo.externalDTD is not None)


class _XsdResolver(etree.Resolver):
    """Lets an XSD include local files but never fetch one from the network."""

    def __init__(self) -> None:
        super().__init__()
        self.network_urls: list[str] = []

    def resolve(  # type: ignore[override]
        self, system_url: str | None, public_id: str | None, context: Any
    ) -> Any:
        scheme = (system_url or "").split(":", 1)[0].lower()
        if scheme in {"http", "https", "ftp"}:
            self.network_urls.append(system_url or "")
            # Answer as if the file were missing (an empty file name): libxml2 then
            # behaves as it does offline, so an import that is only a hint is skipped
            # and one that is really needed fails ("does not resolve"); we say why below.
            return self.resolve_filename("", context)  # type: ignore[attr-defined]  # not in the stubs
        return None  # local file: libxml2's ordinary loader


def load_schema(path: str | os.PathLike[str]) -> etree.XMLSchema:
    """Load the operator's XSD (and the local files it includes), never touching the network.

    Raises :class:`XsdUnusable` (a ValueError and an XmlRejected) naming the path and
    the first problem, so that a bad XSD stops the configuration from loading instead
    of rejecting every file later.
    """
    shown = os.fspath(path)
    resolver = _XsdResolver()
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    parser.resolvers.add(resolver)
    try:
        with _SCHEMA_LOCK:  # libxml2 compiles two schemas at once with internal errors
            doc = etree.parse(shown, parser)
            schema = etree.XMLSchema(doc)
    except OSError as exc:
        raise XsdUnusable(f"cannot read the XSD {shown}: {exc.strerror or exc}") from None
    except etree.LxmlError as exc:
        reason = _CLARK_NAMESPACE.sub("", str(exc))
        if resolver.network_urls:
            reason += (
                f" (flad does not fetch schemas from the network: {resolver.network_urls[0]}; "
                "download it and point the XSD at the local copy)"
            )
        raise XsdUnusable(f"the XSD {shown} cannot be used: {reason}") from None
    return schema


def _schema_reason(schema: etree.XMLSchema) -> str:
    """The first few XSD errors, each with its line, on one line."""
    entries: list[Any] = list(cast("Any", schema.error_log))
    parts: list[str] = []
    for entry in entries[:_MAX_SCHEMA_ERRORS]:
        message = _CLARK_NAMESPACE.sub("", str(entry.message)).strip()
        line = int(entry.line)
        parts.append(f"line {line}: {message}" if line > 0 else message)
    if len(entries) > _MAX_SCHEMA_ERRORS:
        more = len(entries) - _MAX_SCHEMA_ERRORS
        parts.append(f"and {more} more error{'s' if more > 1 else ''}")
    if not parts:
        parts.append("the validator gave no detail")
    return "the file does not follow the XSD: " + "; ".join(parts)


# A probe for check_xpath: one node of every kind an XPath can select.
_XPATH_PROBE = b'<x xmlns:p="urn:p" a="v">t<!--c--><?p q?><y/></x>'


class _NotText(Exception):
    """An XPath result that cannot be an identity: says what it is instead."""


def _text_values(result: object) -> tuple[str, ...]:
    """Stripped text values of an XPath result, or _NotText naming what it gave.

    Elements give their string value (all descendant text, comments excluded),
    attributes and text nodes give their text, a string result gives itself (none
    if empty). Numbers, booleans, comments, PIs and namespace nodes are no identity.
    """
    if isinstance(result, bool):
        raise _NotText("gives a boolean, not elements or text")
    if isinstance(result, int | float):
        raise _NotText("gives a number, not elements or text")
    if isinstance(result, str | bytes):
        text = (result.decode("utf-8") if isinstance(result, bytes) else result).strip()
        return (text,) if text else ()
    values: list[str] = []
    for item in cast("list[object]", result):
        if isinstance(item, etree._Comment):
            node = "comment"
        elif isinstance(item, etree._ProcessingInstruction):
            node = "processing instruction"
        elif isinstance(item, etree._Element):
            values.append("".join(str(text) for text in item.itertext()).strip())
            continue
        elif isinstance(item, str | bytes):
            values.append((item.decode("utf-8") if isinstance(item, bytes) else item).strip())
            continue
        else:
            node = "namespace node" if isinstance(item, tuple) else type(item).__name__
        raise _NotText(f"selects a {node}, not an element, attribute or text")
    return tuple(values)


def check_xpath(expr: str) -> str | None:
    """Why an identity XPath cannot be used, or None if it can.

    Run at configuration load, so that a typo stops the service at start rather than
    rejecting every file. The expression is compiled and tried on a tiny document
    holding every kind of node, which also catches undefined prefixes, variables and
    functions, and expressions that give a number, a boolean or comments instead of
    elements or text. (An expression can still select a comment only in some files:
    check_document says so then.)
    """
    if not expr.strip():
        return "the XPath is empty"
    try:
        result = etree.XPath(expr, smart_strings=False)(etree.fromstring(_XPATH_PROBE))
    except etree.LxmlError as exc:
        detail = str(exc) or type(exc).__name__
        if "namespace prefix" in detail:
            return (
                f"{detail}: flad binds no prefixes, match on local names instead, "
                "e.g. //*[local-name()='EmployerId']"
            )
        return f"invalid XPath: {detail}"
    try:
        _text_values(result)
    except _NotText as exc:
        return f"the XPath {exc}"
    return None


# The default identity XPaths, by the local name each one selects. They are answered
# by one walk of the tree for both (see _elements_named) instead of one full XPath
# run each, which costs about ten times more on a big file.
_DEFAULT_XPATH_NAMES: dict[str, str] = {
    DEFAULT_EMPLOYER_XPATH: "EmployerId",
    DEFAULT_SENDER_XPATH: "SenderId",
}


def _elements_named(
    tree: etree._ElementTree, names: Collection[str]
) -> dict[str, list[etree._Element]]:
    """The elements with each local name, in document order: what ``//*[local-name()=...]`` selects.

    lxml's ``{*}name`` matches the local name in any namespace and in none, as
    ``local-name()`` does, and ``iter`` visits every element of the document (the
    root and all below it) in document order: the lists equal the XPath results.
    """
    found: dict[str, list[etree._Element]] = {name: [] for name in names}
    if found:  # iter() without a tag would yield every node
        for element in tree.iter(*(f"{{*}}{name}" for name in found)):
            found[str(element.tag).rpartition("}")[2]].append(element)
    return found


def _xpath_result(tree: etree._ElementTree, expr: str, what: str) -> object:
    """What one configured identity XPath selects in a checked document (raw)."""
    try:
        result: object = etree.XPath(expr, smart_strings=False)(tree)
        _text_values(result)  # refuses numbers, booleans, comments...
        return result
    except etree.LxmlError as exc:
        problem = f"cannot be used: {exc}"
    except _NotText as exc:
        problem = str(exc)
    raise XmlRejected(f"the configured {what} XPath {expr!r} {problem}; check the configuration")


def _xpath_values(tree: etree._ElementTree, expr: str, what: str) -> tuple[str, ...]:
    """The identity values one configured XPath selects in a checked document."""
    return _text_values(_xpath_result(tree, expr, what))


# The two numbers that name an employer in the official layouts (glossary zones 00014
# and 00011). An identity element that holds them (``EmployerId``) is read by its
# children: its whole text would be both numbers run together.
_ENTERPRISE = "CompanyID"
_NOSS = "NOSSRegistrationNbr"


def _string_value(element: etree._Element) -> str:
    return "".join(str(text) for text in element.itertext()).strip()


def _employer_refs(result: object) -> tuple[EmployerRef, ...]:
    """How each node an employer XPath selected names its employer.

    An element with ``CompanyID`` / ``NOSSRegistrationNbr`` children is read by them;
    an element named ``NOSSRegistrationNbr`` is an ONSS number; any other node's text
    is an enterprise number (flad's reading before profiles existed).
    """
    if isinstance(result, str | bytes):
        text = (result.decode("utf-8") if isinstance(result, bytes) else result).strip()
        return (EmployerRef(text, None),) if text else ()
    refs: list[EmployerRef] = []
    for item in cast("list[object]", result):
        if isinstance(item, etree._Element):
            numbers = {etree.QName(child).localname: _string_value(child)
                       for child in item if isinstance(child.tag, str)
                       and etree.QName(child).localname in (_ENTERPRISE, _NOSS)}
            if numbers:
                refs.append(EmployerRef(numbers.get(_ENTERPRISE), numbers.get(_NOSS)))
            elif etree.QName(item).localname == _NOSS:
                refs.append(EmployerRef(None, _string_value(item)))
            else:
                refs.append(EmployerRef(_string_value(item), None))
        elif isinstance(item, str | bytes):
            refs.append(EmployerRef(
                (item.decode("utf-8") if isinstance(item, bytes) else item).strip(), None))
    return tuple(refs)


def _whole_file(refs: tuple[EmployerRef, ...]) -> tuple[FormIdentity, ...]:
    return (FormIdentity(0, None, None, None, refs),)


def check_document(
    data: bytes,
    *,
    schema: etree.XMLSchema | None,
    root_element: str | None,
    employer_xpath: str | None = DEFAULT_EMPLOYER_XPATH,
    sender_xpath: str | None = DEFAULT_SENDER_XPATH,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    profile: Profile | None = None,
    split_forms: bool = False,
) -> CheckedDocument:
    """Every check one outgoing file must pass; raise :class:`XmlRejected` on the first failure.

    Order: hardened parse, root element (clearer than the XSD's own message for a
    wrong file type), XSD, then the identities. ``root_element`` is compared
    with the root's local name; ``None`` skips that check, as ``schema=None`` skips
    the XSD.

    With a ``profile`` and no ``employer_xpath`` (None), the employers are read
    form by form where the profile says; a configured ``employer_xpath`` overrides
    that and reads the whole file as one. ``sender_xpath=None`` reads no sender.

    With the default identity XPaths or a profile, the file is parsed without
    comments and processing instructions: nothing checked here looks at them, and
    they can be most of a file's nodes. Only libxml2 sees a difference: the text
    around a dropped comment becomes one text node, which may exceed the 10 MB text
    limit that the pieces kept under, and an XSD counts a text-content error once
    instead of once per piece. So a rejection of a file that has comments or PIs
    after its prolog is decided again with them kept, the plain way, and the
    verdict and reason are always exactly those of the plain path. Big files are
    first checked as a stream (see _accept_streaming); with a profile and
    ``split_forms`` (what :func:`forms_validate_alone` says of the schema), form by
    form (see _split_check), which is faster.
    """
    data, prolog_end = _gate(data, max_bytes)
    by_profile = profile if employer_xpath is None else None
    rest = (schema, root_element, employer_xpath, sender_xpath, by_profile)
    plain = (employer_xpath is None or employer_xpath in _DEFAULT_XPATH_NAMES) and (
        sender_xpath is None or sender_xpath in _DEFAULT_XPATH_NAMES)
    if plain:
        # a profile's stream reads forms, not senders: a sender XPath takes the tree
        if len(data) >= STREAM_BYTES and (by_profile is None or sender_xpath is None):
            accepted: CheckedDocument | None
            if by_profile is None and (employer_xpath, sender_xpath) == (
                    DEFAULT_EMPLOYER_XPATH, DEFAULT_SENDER_XPATH):
                accepted = _accept_streaming(data, prolog_end, schema, root_element)
            else:
                split: CheckedDocument | _FormTooBig | None = _FORM_TOO_BIG
                if by_profile is not None and schema is not None and split_forms:
                    split = _split_check(data, prolog_end, schema, root_element,
                                         _FormCollector(by_profile))
                if isinstance(split, _FormTooBig):  # not tried, or a form too big
                    collector: _Collector = (
                        _FormCollector(by_profile) if by_profile is not None else
                        _Identities(employer_xpath, sender_xpath))
                    accepted = _stream_check(data, prolog_end, schema, root_element,
                                             collector)
                else:
                    accepted = split
            if accepted is not None:
                return accepted
            # refused, or not for streaming: decided below the plain way, for its reason
        try:
            return _check_tree(_parse_checked(data, keep_comments=False), *rest)
        except XmlRejected:
            if data.find(b"<!--", prolog_end) == -1 and data.find(b"<?", prolog_end) == -1:
                raise  # no comment or PI after the prolog: the same tree either way
    return _check_tree(_parse_checked(data, keep_comments=True), *rest)


class _Collector:
    """What a streamed check keeps of a file, from the parser's start and end events."""

    root: etree._Element | None = None

    def names(self) -> tuple[str, ...]:
        """Local names of the elements (other than the root) whose events are wanted."""
        raise NotImplementedError

    def take(self, events: Iterable[tuple[str, object]]) -> bool:
        """Record events; False when the first is not the root's start."""
        raise NotImplementedError

    def complete(self) -> bool:
        """Whether everything opened was closed (a whole document was seen)."""
        raise NotImplementedError

    def result(self, root_tag: str) -> CheckedDocument:
        raise NotImplementedError


def _accept_streaming(data: bytes, root_at: int, schema: etree.XMLSchema | None,
                      root_element: str | None) -> CheckedDocument | None:
    """:func:`_stream_check` with the default identity XPaths."""
    return _stream_check(data, root_at, schema, root_element,
                         _Identities(DEFAULT_EMPLOYER_XPATH, DEFAULT_SENDER_XPATH))


def _streamable_root(data: bytes, root_at: int, names: tuple[str, ...],
                     root_element: str | None) -> str | None:
    """The root's local name when a streamed check may decide the file; None sends it the
    plain way (no readable name, a root that is its own identity, or the wrong root)."""
    found = _ROOT_NAME.match(data, root_at)
    if found is None:
        return None
    try:
        root_name: str = found["local"].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if root_name in names or (root_element is not None and root_name != root_element):
        return None
    return root_name


def _stream_check(data: bytes, root_at: int, schema: etree.XMLSchema | None,
                  root_element: str | None, kept: _Collector) -> CheckedDocument | None:
    """The verdict of the tree path for a file it would accept, in bounded memory.

    The tree of a 50 MiB declaration of records is about 600 MiB; here the file is
    validated against the XSD (if any) while it is parsed, and the elements already
    complete are dropped as it goes. Only the root (whose name is read at `root_at`,
    where the prolog ends) and the elements the collector names are looked at, each
    when it ends (before it can be dropped). None for anything else (the root is
    not `root_element`, a syntax or XSD error, a DOCTYPE): the caller then decides
    the plain way, so a refusal's reason is always the tree path's.

    libxml2 validates with its own context per parser here, so the schema's shared
    error log (and _SCHEMA_LOCK) is not involved.
    """
    names = kept.names()
    root_name = _streamable_root(data, root_at, names, root_element)
    if root_name is None:
        return None
    parser = etree.XMLPullParser(
        events=("start", "end"), tag=[f"{{*}}{root_name}", *(f"{{*}}{n}" for n in names)],
        schema=schema, **_HARDENED, remove_comments=True, remove_pis=True)
    parser.resolvers.add(_RefuseAllResolver())
    view = memoryview(data)
    try:
        for offset in range(0, len(view), _STREAM_CHUNK):
            parser.feed(bytes(view[offset:offset + _STREAM_CHUNK]))
            if not kept.take(parser.read_events()):
                return None
            if kept.root is None and offset >= _STREAM_CHUNK:  # no root in 2 MiB: not ours
                return None
            drop_complete(kept.root)
        parser.close()
        if not kept.take(parser.read_events()):
            return None
    except etree.LxmlError:
        return None
    root = kept.root
    if root is None or not kept.complete() or _declares_doctype(root.getroottree()):
        return None
    return kept.result(etree.QName(root).localname)


class _FormTooBig:
    """_split_check's answer for a file with a form too big to be kept whole."""


_FORM_TOO_BIG = _FormTooBig()

_XS = "{http://www.w3.org/2001/XMLSchema}"
# Constructs that tie one form to another (or to another file): with any of them, a
# form valid alone might not be valid in its file.
_CROSS_FORM = ("unique", "key", "keyref", "include", "import", "redefine", "override")


def forms_validate_alone(xsd: str | os.PathLike[str], profile: Profile) -> bool:
    """Whether, by this XSD, a file is valid exactly when each form is valid on its own.

    True when the root element is declared globally as a sequence of one reference to
    the global form element, ``maxOccurs="unbounded"`` (so the root accepts one form
    as it accepts any number), and the schema has no identity constraints, no ID or
    IDREF types and nothing included from other files. The official DmfA, DIMONA
    and GenericXmlDocument schemas are so; an XSD that is not, or cannot be read,
    gives False and the file is validated as one stream.
    """
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        root = etree.parse(os.fspath(xsd), parser).getroot()
    except (OSError, etree.LxmlError):
        return False
    for element in root.iter():
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag.startswith(_XS) and tag[len(_XS):] in _CROSS_FORM:
            return False
        kind = str(element.get("type", "")).rpartition(":")[2]
        if kind in ("ID", "IDREF", "IDREFS"):
            return False
    for declaration in root.findall(f"{_XS}element"):
        if declaration.get("name") != profile.root_element:
            continue
        sequences = declaration.findall(f"{_XS}complexType/{_XS}sequence")
        if len(sequences) != 1 or declaration.get("type") is not None:
            return False
        items = [c for c in sequences[0] if isinstance(c.tag, str)]
        return (len(items) == 1 and items[0].tag == f"{_XS}element"
                and str(items[0].get("ref", "")).rpartition(":")[2] == profile.form_element
                and items[0].get("maxOccurs") == "unbounded"
                and items[0].get("minOccurs", "1") == "1"
                and any(d.get("name") == profile.form_element
                        for d in root.findall(f"{_XS}element")))
    return False


def _split_check(data: bytes, root_at: int, schema: etree.XMLSchema, root_element: str | None,
                 kept: _FormCollector) -> CheckedDocument | _FormTooBig | None:
    """The verdict of the tree path for a file it would accept, validating form by form.

    Only for a schema where :func:`forms_validate_alone`: the file is parsed as a
    stream without the XSD, each form is validated on its own as soon as it is
    complete (libxml2 validates a tree about three times faster than a stream) and
    then dropped, and at the end the root with its last form is validated, which
    checks the root's name, attributes and content. A form whose bytes pass
    SPLIT_FORM_BYTES gives _FORM_TOO_BIG (the caller validates as one stream: memory
    stays bounded); anything refused or odd gives None (the tree path decides).
    """
    names = kept.names()
    root_name = _streamable_root(data, root_at, names, root_element)
    if root_name is None:
        return None
    parser = etree.XMLPullParser(
        events=("start", "end"), tag=[f"{{*}}{root_name}", *(f"{{*}}{n}" for n in names)],
        **_HARDENED, remove_comments=True, remove_pis=True)
    parser.resolvers.add(_RefuseAllResolver())
    form = kept.profile.form_element
    validated: set[etree._Element] = set()
    opened_at = 0  # where the open form started (bytes fed by then)
    view = memoryview(data)
    try:
        for offset in range(0, len(view) + _STREAM_CHUNK, _STREAM_CHUNK):
            if offset < len(view):
                parser.feed(bytes(view[offset:offset + _STREAM_CHUNK]))
            else:
                parser.close()
            events = list(parser.read_events())
            if not kept.take(events):
                return None
            root = kept.root
            if root is None:
                if offset >= _STREAM_CHUNK:
                    return None
                continue
            for event, item in events:
                element = cast("etree._Element", item)
                if element.getparent() is not root or etree.QName(element).localname != form:
                    continue
                if event == "start":
                    opened_at = offset
                    continue
                with _SCHEMA_LOCK:
                    if not schema.validate(element):
                        return None
                validated.add(element)
                for earlier in list(element.itersiblings(preceding=True)):
                    if earlier not in validated or (earlier.tail or "").strip():
                        return None  # not a form, or text between forms: the plain way
                    validated.discard(earlier)
                    root.remove(earlier)
            if kept.forming() and offset - opened_at > SPLIT_FORM_BYTES:
                return _FORM_TOO_BIG
    except etree.LxmlError:
        return None
    root = kept.root
    if root is None or not kept.complete() or _declares_doctype(root.getroottree()):
        return None
    with _SCHEMA_LOCK:
        if not schema.validate(root.getroottree()):
            return None
    return kept.result(etree.QName(root).localname)


def drop_complete(root: etree._Element | None) -> None:
    """Free the elements already complete: all but the last child, along the open path."""
    node = root
    while node is not None and len(node):
        if len(node) > 1:
            del node[:-1]
        node = node[-1]


class _Identities(_Collector):
    """The default identity XPaths' values in document order, as a stream goes by."""

    def __init__(self, employer_xpath: str | None, sender_xpath: str | None) -> None:
        self.employer = _DEFAULT_XPATH_NAMES.get(employer_xpath or "")
        self.sender = _DEFAULT_XPATH_NAMES.get(sender_xpath or "")
        self.root = None
        self.values: dict[str, list[str]] = {
            name: [] for name in (self.employer, self.sender) if name is not None}
        self.refs: list[EmployerRef] = []
        self.started: dict[etree._Element, tuple[str, int]] = {}  # open identities
        self.numbers: dict[etree._Element, dict[str, str]] = {}  # their number children

    def names(self) -> tuple[str, ...]:
        return (*self.values, _ENTERPRISE, _NOSS)

    def take(self, events: Iterable[tuple[str, object]]) -> bool:
        for event, item in events:
            element = cast("etree._Element", item)  # start and end give elements
            if self.root is None:
                if event != "start" or element.getparent() is not None:
                    return False
                self.root = element
            elif element is self.root:
                continue
            elif event == "start":
                name = etree.QName(element).localname
                if name in self.values:  # not an element named as the root, inside it
                    self.started[element] = (name, len(self.values[name]))
                    self.values[name].append("")
            elif element in self.started:  # its string value is whole at its end
                name, index = self.started.pop(element)
                self.values[name][index] = _string_value(element)
                if name == self.employer:
                    numbers = self.numbers.pop(element, {})
                    self.refs.append(
                        EmployerRef(numbers.get(_ENTERPRISE), numbers.get(_NOSS)) if numbers
                        else EmployerRef(None, self.values[name][index]) if name == _NOSS
                        else EmployerRef(self.values[name][index], None))
            else:  # a number: kept if its parent is an open employer identity
                parent = element.getparent()
                if parent is not None and self.started.get(parent, ("",))[0] == self.employer:
                    name = etree.QName(element).localname
                    self.numbers.setdefault(parent, {})[name] = _string_value(element)
        return True

    def complete(self) -> bool:
        return not self.started

    def result(self, root_tag: str) -> CheckedDocument:
        return CheckedDocument(
            root_tag=root_tag,
            employers=tuple(self.values[self.employer]) if self.employer else (),
            senders=tuple(self.values[self.sender]) if self.sender else (),
            forms=_whole_file(tuple(self.refs)))


_FORM_FIELDS = ("Identification", "FormCreationDate", "FormCreationHour")


class _FormCollector(_Collector):
    """A profile's forms and the employers each names, from start and end events.

    Fed by a streamed parse (elements are dropped once complete, so every value is
    read at its own end event) or by a walk of a whole tree, with the same result.
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.root = None
        self.forms: list[FormIdentity] = []
        self._form: etree._Element | None = None
        self._fields: dict[str, str] = {}
        self._employers: list[EmployerRef] = []
        self._numbers: dict[etree._Element, dict[str, str]] = {}
        self._paths = frozenset(profile.employer_paths)
        self._holders = frozenset(path[-1] for path in profile.employer_paths)

    def names(self) -> tuple[str, ...]:
        p = self.profile
        path_names = {name for path in p.employer_paths for name in path}
        return tuple(dict.fromkeys((p.form_element, *_FORM_FIELDS, *sorted(path_names),
                                    p.enterprise_element, p.noss_element,
                                    *p.other_elements)))

    def _path(self, element: etree._Element) -> tuple[str, ...] | None:
        """Local names from below the current form down to ``element``; None if outside."""
        names: list[str] = []
        node: etree._Element | None = element
        while node is not None and node is not self._form:
            names.append(etree.QName(node).localname)
            node = node.getparent()
        return tuple(reversed(names)) if node is not None else None

    def take(self, events: Iterable[tuple[str, object]]) -> bool:
        p = self.profile
        for event, item in events:
            element = cast("etree._Element", item)
            if self.root is None:
                if event != "start" or element.getparent() is not None:
                    return False
                self.root = element
                continue
            if element is self.root:
                continue
            name = etree.QName(element).localname
            parent = element.getparent()
            if parent is self.root:
                if name != p.form_element:
                    continue
                if event == "start":
                    self._form, self._fields, self._employers = element, {}, []
                elif self._form is element:
                    fields = self._fields
                    self.forms.append(FormIdentity(
                        len(self.forms) + 1, fields.get("Identification"),
                        fields.get("FormCreationDate"), fields.get("FormCreationHour"),
                        tuple(self._employers)))
                    self._form = None
                continue
            if self._form is None or parent is None:
                continue
            if event == "start":
                if name in self._holders and self._path(element) in self._paths:
                    self._numbers[element] = {}  # an employer: its numbers are kept
            elif parent is self._form and name in _FORM_FIELDS:
                self._fields[name] = _string_value(element)
            elif (name in (p.enterprise_element, p.noss_element, *p.other_elements)
                  and parent in self._numbers):
                self._numbers[parent][name] = _string_value(element)
            elif element in self._numbers:
                numbers = self._numbers.pop(element)
                other = next((f"{n} {numbers[n]}" for n in p.other_elements if n in numbers),
                             None)
                self._employers.append(EmployerRef(
                    numbers.get(p.enterprise_element), numbers.get(p.noss_element), other))
        return True

    def complete(self) -> bool:
        return self._form is None and not self._numbers

    def forming(self) -> bool:
        """Whether a form is open (started, not yet ended)."""
        return self._form is not None

    def result(self, root_tag: str) -> CheckedDocument:
        return CheckedDocument(root_tag=root_tag, employers=(), senders=(),
                               forms=tuple(self.forms))


def _check_tree(
    tree: etree._ElementTree,
    schema: etree.XMLSchema | None,
    root_element: str | None,
    employer_xpath: str | None,
    sender_xpath: str | None,
    profile: Profile | None = None,
) -> CheckedDocument:
    """The checks of :func:`check_document` after the parse: root element, XSD, identities."""
    root = tree.getroot()
    root_tag = etree.QName(root).localname
    if root_element is not None and root_tag != root_element:
        raise XmlRejected(f"root element is {root_tag!r}, expected {root_element!r}")
    if schema is not None:
        with _SCHEMA_LOCK:
            valid = schema.validate(tree)
            reason = None if valid else _schema_reason(schema)
        if reason is not None:
            raise XmlRejected(reason)
    wanted = [x for x in (employer_xpath, sender_xpath) if x is not None]
    named = _elements_named(
        tree, {_DEFAULT_XPATH_NAMES[x] for x in wanted if x in _DEFAULT_XPATH_NAMES}
    )

    def selected(expr: str, what: str) -> object:
        name = _DEFAULT_XPATH_NAMES.get(expr)
        return _xpath_result(tree, expr, what) if name is None else named[name]

    senders = _text_values(selected(sender_xpath, "sender")) if sender_xpath else ()
    if employer_xpath is None:
        forms: tuple[FormIdentity, ...] = ()
        if profile is not None:
            collector = _FormCollector(profile)
            collector.take(etree.iterwalk(
                root, events=("start", "end"), tag=[f"{{*}}{root_tag}",
                                                    *(f"{{*}}{n}" for n in collector.names())]))
            forms = tuple(collector.forms)
        return CheckedDocument(root_tag=root_tag, employers=(), senders=senders, forms=forms)
    employers = selected(employer_xpath, "employer")
    return CheckedDocument(
        root_tag=root_tag,
        employers=_text_values(employers),
        senders=senders,
        forms=_whole_file(_employer_refs(employers)),
    )
