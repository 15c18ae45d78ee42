"""The file-name grammar of the social-security batch channel: parse and format, pure.

A name is ``TYPE.APPL.SENDER.YYYYMMDD.SEQ.ENV[.PARTS[.PART]]``. Names come from the
local outbox and from the remote server, so parsing is strict and every refusal is a
one-line reason that quotes the name with ``repr()``: a hostile name (newline, control
character) can never break a log line or escape a folder.

As strict as the platform (its error list, ``ErrorCodes2022-1_30.xml``): a date of 8
digits (ACRF-109) that is a real date (110) and, when ``parse`` is given today's date,
not later than today (111); a sequence of exactly 5 characters (112) 0-9 and A-Z (367),
never ``00000`` (127); an environment R, T or S (117); a part count of one digit (114),
never zero (116). A refusal for one of these carries the code in ``InvalidName.code``.
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass

__all__ = [
    "ENVIRONMENTS",
    "FILE_TYPES",
    "MAX_NAME_LENGTH",
    "MAX_PARTS",
    "SEQUENCE_CAPACITY",
    "FileName",
    "InvalidName",
    "SubmissionNames",
    "format_name",
    "pad_sender",
    "parse",
    "sequence_for",
    "sequence_index",
    "submission_names",
]

FILE_TYPES = ("FI", "FS", "GO", "TD", "FO", "CO")
ENVIRONMENTS = ("R", "T", "S")  # production, test, simulation variant

# Types that describe one part of a (possibly split) data file: PARTS and PART together.
_PART_TYPES = frozenset({"FI", "FS", "FO", "CO"})
# Types that describe a whole submission: PARTS alone.
_SET_TYPES = frozenset({"GO", "TD"})

MAX_NAME_LENGTH = 64
MAX_PARTS = 9  # PARTS and PART have exactly one digit (ACRF-114)

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGIT_SEQUENCES = 99999
_ALPHA_BLOCK = 36**4
SEQUENCE_CAPACITY = _DIGIT_SEQUENCES + len(_LETTERS) * _ALPHA_BLOCK

# Explicit ASCII classes: ``\d`` and ``str.isdigit`` also accept non-ASCII digits.
_APPLICATION_RE = re.compile(r"[A-Z0-9]{4}")
_SENDER_RE = re.compile(r"[0-9]{6}")
_DATE_RE = re.compile(r"[0-9]{8}")
_SEQUENCE_RE = re.compile(r"[0-9A-Z]{5}")
_COUNT_RE = re.compile(r"[1-9]")

_QUOTE_LIMIT = 80


class InvalidName(ValueError):
    """A file name that does not follow the grammar; ``str(e)`` is a one-line reason.

    ``reason`` holds the reason without the quoted name, for callers that print the
    name elsewhere.
    """

    def __init__(self, message: str, *, reason: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message
        self.code = code
        """The platform's error code for this refusal (``ACRF-112``...), where it has one."""


def _quote(name: str) -> str:
    """``repr()`` of a name, cut short so a huge hostile name cannot flood a log line."""
    if len(name) <= _QUOTE_LIMIT:
        return repr(name)
    return f"{name[:_QUOTE_LIMIT]!r}... ({len(name)} characters)"


_CODE_AT_END = re.compile(r"\((ACRF-[0-9]{3})\)$")


def _refuse(name: str, reason: str) -> InvalidName:
    """The refusal of a name; a reason ending in ``(ACRF-nnn)`` gives its code."""
    found = _CODE_AT_END.search(reason)
    return InvalidName(f"{_quote(name)}: {reason}", reason=reason,
                       code=found.group(1) if found else None)


def _format_date(date: datetime.date) -> str:
    # Not strftime: "%Y" does not zero-pad years below 1000 on every platform.
    return f"{date.year:04d}{date.month:02d}{date.day:02d}"


def _uppercase_hint(value: str, pattern: re.Pattern[str]) -> str:
    """Says "must be uppercase" when only the case is wrong; the commonest slip."""
    if value.isascii() and value != value.upper() and pattern.fullmatch(value.upper()):
        return " (must be uppercase)"
    return ""


def _count_problem(value: object, label: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{label} must be an integer, got {value!r}"
    if not 1 <= value <= MAX_PARTS:
        reason = f"{label} must be between 1 and {MAX_PARTS}, got {value}"
        if label != "PARTS":
            return reason
        return f"{reason} ({'ACRF-116' if value == 0 else 'ACRF-114'})"
    return None


def _type_problem(type: object) -> str | None:
    if isinstance(type, str) and type in FILE_TYPES:
        return None
    hint = (
        " (must be uppercase)"
        if isinstance(type, str) and type.isascii() and type.upper() in FILE_TYPES
        else ""
    )
    return f"unknown type {type!r}{hint}, expected one of {', '.join(FILE_TYPES)}"


def _application_problem(application: object) -> str | None:
    if isinstance(application, str) and _APPLICATION_RE.fullmatch(application):
        return None
    hint = _uppercase_hint(application, _APPLICATION_RE) if isinstance(application, str) else ""
    return f"application must be 4 characters A-Z or 0-9, got {application!r}{hint}"


def _sender_problem(sender: object) -> str | None:
    if isinstance(sender, str) and _SENDER_RE.fullmatch(sender):
        return None
    return f"sender must be 6 digits, got {sender!r}"


def _field_problem(
    type: object,
    application: object,
    sender: object,
    date: object,
    sequence: object,
    environment: object,
    parts: object,
    part: object,
) -> str | None:
    """The first thing wrong with a set of name fields, or None; shared by parse and FileName."""
    if problem := _type_problem(type):
        return problem
    if problem := _application_problem(application):
        return problem
    if problem := _sender_problem(sender):
        return problem
    if not isinstance(date, datetime.date) or isinstance(date, datetime.datetime):
        return f"date must be a datetime.date, got {date!r}"
    if not isinstance(sequence, str) or not _SEQUENCE_RE.fullmatch(sequence):
        hint = _uppercase_hint(sequence, _SEQUENCE_RE) if isinstance(sequence, str) else ""
        code = "ACRF-112" if not isinstance(sequence, str) or len(sequence) != 5 else "ACRF-367"
        return f"sequence must be 5 characters 0-9 or A-Z, got {sequence!r}{hint} ({code})"
    if sequence == "00000":
        return "sequence must not be zero, got '00000' (ACRF-127)"
    if not isinstance(environment, str) or environment not in ENVIRONMENTS:
        hint = (
            " (must be uppercase)"
            if isinstance(environment, str)
            and environment.isascii()
            and environment.upper() in ENVIRONMENTS
            else ""
        )
        return (f"environment must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}{hint} "
                "(ACRF-117)")
    if parts is not None and (problem := _count_problem(parts, "PARTS")):
        return problem
    if part is not None and (problem := _count_problem(part, "PART")):
        return problem
    if type in _SET_TYPES:
        if part is not None:
            return f"{type} names carry PARTS alone, not PART (got PART {part!r})"
    elif (parts is None) != (part is None):
        return f"{type} names carry both PARTS and PART or neither"
    if isinstance(parts, int) and isinstance(part, int) and part > parts:
        return f"PART {part} is greater than PARTS {parts}"
    return None


class _Keep(enum.Enum):
    """Sentinel type for ``with_type``: keep the part the rules say to keep."""

    KEEP = enum.auto()


@dataclass(frozen=True)
class FileName:
    """One valid file name, as fields; constructing an invalid one raises InvalidName."""

    type: str
    application: str
    sender: str
    date: datetime.date
    sequence: str
    environment: str
    parts: int | None = None
    part: int | None = None

    def __post_init__(self) -> None:
        """Refuse at construction so that no invalid FileName exists anywhere."""
        problem = _field_problem(
            self.type,
            self.application,
            self.sender,
            self.date,
            self.sequence,
            self.environment,
            self.parts,
            self.part,
        )
        if problem is not None:
            raise _refuse(self._draft(), problem)

    def _draft(self) -> str:
        """Best-effort dotted form of possibly invalid fields, to quote in a refusal."""
        date = _format_date(self.date) if isinstance(self.date, datetime.date) else self.date
        fields: list[object] = [
            self.type,
            self.application,
            self.sender,
            date,
            self.sequence,
            self.environment,
        ]
        fields += [f for f in (self.parts, self.part) if f is not None]
        return ".".join(str(f) for f in fields)

    def __str__(self) -> str:
        """The name exactly as it goes on the wire."""
        return self._draft()

    @property
    def set_key(self) -> str:
        """``APPL.SENDER.YYYYMMDD.SEQ.ENV``: what FI, FS, GO (and replies) of one set share."""
        return ".".join(
            (
                self.application,
                self.sender,
                _format_date(self.date),
                self.sequence,
                self.environment,
            )
        )

    def with_type(self, type: str, *, part: int | _Keep | None = _Keep.KEEP) -> FileName:
        """The sibling name of another type: FS from FI, GO from FI (GO keeps PARTS, drops PART).

        By default PART is kept, except for GO and TD, which never carry it. Pass
        ``part`` to choose it, e.g. FI part 3 from a GO.
        """
        if part is _Keep.KEEP:
            part = None if type in _SET_TYPES else self.part
        return FileName(
            type,
            self.application,
            self.sender,
            self.date,
            self.sequence,
            self.environment,
            self.parts,
            part,
        )


def _string_problem(name: str) -> str | None:
    """Refusals that do not depend on the elements: emptiness, length, characters."""
    if name == "":
        return "empty file name"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters ({len(name)})"
    for index, char in enumerate(name):
        if char in "/\\":
            return f"contains a path separator {char!r} at position {index}"
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return f"contains a control character {char!r} at position {index}"
        if char.isspace():
            return f"contains whitespace {char!r} at position {index}"
        if code > 0x7E:
            return f"contains a non-ASCII character {char!r} at position {index}"
    return None


def _parse_count(value: str, label: str) -> int | str:
    """A PARTS/PART element as an int, or the reason it is not one."""
    if not _COUNT_RE.fullmatch(value):
        reason = f"{label} must be a positive integer of one digit (1 to 9), got {value!r}"
        if label != "PARTS":  # the error list has codes for the part count only
            return reason
        return f"{reason} ({'ACRF-116' if value == '0' else 'ACRF-114'})"
    return int(value)


def parse(name: str, *, today: datetime.date | None = None) -> FileName:
    """Parse a file name, or raise InvalidName saying which element is wrong and why.

    With ``today``, a date later than it is refused (ACRF-111), as the platform does
    (a name made now by a clock in another time zone may give today + 1: callers
    that read other machines' names pass the latest date it may be there).
    """
    if not isinstance(name, str):
        raise TypeError(f"file name must be a str, got {type(name).__name__}")
    problem = _string_problem(name)
    if problem is not None:
        raise _refuse(name, problem)

    elements = name.split(".")
    for position, element in enumerate(elements, start=1):
        if element == "":
            raise _refuse(name, f"element {position} is empty (leading, trailing or double dot)")
    if not 6 <= len(elements) <= 8:
        raise _refuse(
            name,
            f"has {len(elements)} elements, expected 6 to 8: "
            "TYPE.APPL.SENDER.YYYYMMDD.SEQ.ENV[.PARTS[.PART]]",
        )

    type_, application, sender, date_text, sequence, environment = elements[:6]
    # Check the type first: it decides how many elements are allowed.
    if problem := _type_problem(type_):
        raise _refuse(name, problem)
    if type_ in _SET_TYPES and len(elements) == 8:
        raise _refuse(name, f"{type_} names carry PARTS alone, not PART (8 elements)")
    if type_ in _PART_TYPES and len(elements) == 7:
        raise _refuse(name, f"{type_} names carry both PARTS and PART or neither (7 elements)")

    # Elements in the order they are written, so the first wrong one is reported.
    if problem := _application_problem(application) or _sender_problem(sender):
        raise _refuse(name, problem)
    if not _DATE_RE.fullmatch(date_text):
        raise _refuse(name, f"date must be 8 digits YYYYMMDD, got {date_text!r} (ACRF-109)")
    try:
        date = datetime.date(int(date_text[:4]), int(date_text[4:6]), int(date_text[6:]))
    except ValueError:
        raise _refuse(name, f"date {date_text!r} is not a real calendar date (ACRF-110)"
                      ) from None
    if today is not None and date > today:
        raise _refuse(name, f"date {date_text} is later than today, {_format_date(today)} "
                      "(ACRF-111)")

    # Both counts left out: a valid shape for every type, so this checks SEQ and ENV only.
    if problem := _field_problem(
        type_, application, sender, date, sequence, environment, None, None
    ):
        raise _refuse(name, problem)
    counts: list[int | None] = [None, None]
    for index, (element, label) in enumerate(zip(elements[6:], ("PARTS", "PART"), strict=False)):
        value = _parse_count(element, label)
        if isinstance(value, str):
            raise _refuse(name, value)
        counts[index] = value

    problem = _field_problem(
        type_, application, sender, date, sequence, environment, counts[0], counts[1]
    )
    if problem is not None:
        raise _refuse(name, problem)
    return FileName(type_, application, sender, date, sequence, environment, counts[0], counts[1])


def format_name(
    type: str,
    application: str,
    sender: str,
    date: datetime.date,
    sequence: str,
    environment: str,
    parts: int | None = None,
    part: int | None = None,
) -> str:
    """The formatted name; raises InvalidName when the fields break the grammar."""
    return str(FileName(type, application, sender, date, sequence, environment, parts, part))


@dataclass(frozen=True)
class SubmissionNames:
    """The names of one submission: an FI and an FS per part, then the single GO."""

    fi: list[str]
    fs: list[str]
    go: str


def submission_names(
    application: str,
    sender: str,
    date: datetime.date,
    sequence: str,
    environment: str,
    parts: int = 1,
) -> SubmissionNames:
    """All names of a submission in ``parts`` parts (``FI....ENV.parts.i``, ``GO....ENV.parts``)."""
    first = FileName("FI", application, sender, date, sequence, environment, parts, 1)
    fi = [first.with_type("FI", part=i) for i in range(1, parts + 1)]
    return SubmissionNames(
        fi=[str(n) for n in fi],
        fs=[str(n.with_type("FS")) for n in fi],
        go=str(first.with_type("GO")),
    )


def pad_sender(sender_id: str | int) -> str:
    """The 6-digit sender element of a name: ``"6400"`` -> ``"006400"``.

    Configuration and registries write the sender number without its leading zeros.
    """
    if isinstance(sender_id, bool):
        raise ValueError(f"sender number must be digits, got {sender_id!r}")
    if isinstance(sender_id, int):
        if sender_id < 0:
            raise ValueError(f"sender number must not be negative, got {sender_id}")
        text = str(sender_id)
    elif isinstance(sender_id, str):
        text = sender_id
    else:
        raise TypeError(f"sender number must be a str or int, got {type(sender_id).__name__}")
    if text == "":
        raise ValueError("sender number is empty")
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"sender number must be digits only, got {text!r}")
    if len(text) > 6:
        raise ValueError(f"sender number has more than 6 digits: {text!r}")
    return text.zfill(6)


def sequence_for(index: int) -> str:
    """The SEQ element for the index-th submission of a sender, date and environment.

    Digits first (``00001`` .. ``99999``), then a letter and 4 base-36 characters
    (``A0000`` ..), so that later sequences always sort after earlier ones as strings.
    """
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"sequence index must be an int, got {index!r}")
    if not 1 <= index <= SEQUENCE_CAPACITY:
        raise ValueError(f"sequence index must be between 1 and {SEQUENCE_CAPACITY}, got {index}")
    if index <= _DIGIT_SEQUENCES:
        return f"{index:05d}"
    k = index - _DIGIT_SEQUENCES - 1
    head, rest = divmod(k, _ALPHA_BLOCK)
    tail = ""
    for _ in range(4):
        rest, digit = divmod(rest, 36)
        tail = _ALNUM[digit] + tail
    return _LETTERS[head] + tail


def sequence_index(seq: str) -> int:
    """The index that ``sequence_for`` turns into ``seq``; ValueError for any other string."""
    if not isinstance(seq, str) or not _SEQUENCE_RE.fullmatch(seq):
        raise ValueError(f"sequence must be 5 characters 0-9 or A-Z, got {seq!r}")
    if seq.isdigit():
        if seq == "00000":
            raise ValueError("sequence '00000' is not used: sequences start at '00001'")
        return int(seq)
    if seq[0] not in _LETTERS:
        raise ValueError(
            f"sequence {seq!r} is not one flad allocates: "
            "a sequence is either all digits or starts with a letter"
        )
    value = 0
    for char in seq[1:]:
        value = value * 36 + _ALNUM.index(char)
    return _DIGIT_SEQUENCES + 1 + _LETTERS.index(seq[0]) * _ALPHA_BLOCK + value
