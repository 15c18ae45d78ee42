"""Enterprise numbers, qualities and mandates: who may send what on a channel, pure.

The platform refuses a file sent for an employer the channel's company may not speak
for, but only after upload and with a terse error code. Checking here lets flad refuse
the file locally with a reason a payroll clerk understands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MANDATARY_QUALITIES",
    "QUALITIES",
    "IdentityVerdict",
    "check_identity",
    "enterprise_number_problem",
    "is_valid_enterprise_number",
    "normalize_enterprise_number",
    "parse_mandates",
]

QUALITIES = ("employer", "social_secretariat", "service_provider", "training_provider")
MANDATARY_QUALITIES = frozenset({"social_secretariat", "service_provider"})

# ASCII digits only: ``str.isdigit`` also accepts other scripts' digits.
_TEN_DIGITS = re.compile(r"[0-9]{10}")
_NINE_DIGITS = re.compile(r"[0-9]{9}")
_QUOTE_LIMIT = 40


def _number_detail(value: str) -> str | None:
    """What is wrong with an enterprise number, as the end of a sentence, or None."""
    if not isinstance(value, str) or not _TEN_DIGITS.fullmatch(value):
        return "must be 10 digits"
    expected = 97 - int(value[:8]) % 97
    if int(value[8:]) != expected:
        return f"fails the mod-97 check (its last two digits must be {expected:02d})"
    return None


def enterprise_number_problem(value: str) -> str | None:
    """None when ``value`` is a valid enterprise number (10 digits, mod-97), else why not.

    The value is checked as given; call ``normalize_enterprise_number`` first for
    numbers written with dots or spaces.
    """
    detail = _number_detail(value)
    return None if detail is None else f"enterprise number {value!r} {detail}"


def is_valid_enterprise_number(value: str) -> bool:
    """True when ``value`` is 10 digits with a correct mod-97 check."""
    return enterprise_number_problem(value) is None


def normalize_enterprise_number(value: str) -> str:
    """The plain 10-digit form: ``"0123.456.749"`` -> ``"0123456749"``; does not validate.

    Drops surrounding whitespace (XML text), inner spaces and dots (as written on
    invoices) and gives a 9-digit legacy number its leading 0, so that numbers compare
    equal however written.
    """
    compact = value.strip().replace(" ", "").replace(".", "")
    if _NINE_DIGITS.fullmatch(compact):
        return "0" + compact
    return compact


def parse_mandates(text: str, source: str = "mandates") -> frozenset[str]:
    """The employers' enterprise numbers of a mandate list, one per line, normalized.

    ``#`` starts a comment; blank lines are ignored. An invalid line raises ValueError
    naming ``source`` and the line number, so the operator can fix the file.
    """
    numbers: set[str] = set()
    for line_number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        number = normalize_enterprise_number(content)
        detail = _number_detail(number)
        if detail is not None:
            raise ValueError(
                f"{source}, line {line_number}: {content!r} is not a valid enterprise number: "
                f"it {detail}"
            )
        numbers.add(number)
    return frozenset(numbers)


@dataclass(frozen=True)
class IdentityVerdict:
    """Whether a file may go out on this channel; ``reason`` says why not, in one line."""

    ok: bool
    reason: str | None
    warnings: tuple[str, ...]


def _refuse(reason: str) -> IdentityVerdict:
    return IdentityVerdict(ok=False, reason=reason, warnings=())


def _distinct(values: Iterable[str]) -> list[str]:
    """Repeats dropped, first occurrence order: one file often names a number many times."""
    return list(dict.fromkeys(values))


def _quote(value: str) -> str:
    """``repr()`` cut short: a number read from a hostile file may be any text, any size."""
    if len(value) <= _QUOTE_LIMIT:
        return repr(value)
    return f"{value[:_QUOTE_LIMIT]!r}... ({len(value)} characters)"


def _invalid_in_data(values: Iterable[str], role: str) -> str | None:
    for value in values:
        detail = _number_detail(normalize_enterprise_number(value))
        if detail is not None:
            return (
                f"the file names {_quote(value)} as {role}, which is not a valid enterprise "
                f"number: it {detail}"
            )
    return None


def check_identity(
    *,
    quality: str,
    company_id: str,
    employers: Sequence[str],
    senders: Sequence[str],
    mandates: frozenset[str] | None,
) -> IdentityVerdict:
    """Whether the channel of ``company_id``, acting in ``quality``, may send this file.

    ``employers`` and ``senders`` are the enterprise numbers read from the file;
    ``mandates`` the employers that gave the company a mandate (None: no list
    configured, so the check is skipped with a warning). A wrong number in the file is
    a refusal; a wrong ``quality`` or ``company_id`` is configuration, so ValueError.
    """
    for name, values in (("employers", employers), ("senders", senders)):
        if isinstance(values, str):
            raise TypeError(f"{name} must be a sequence of numbers, not a single str")
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}, expected one of {', '.join(QUALITIES)}")
    company = normalize_enterprise_number(company_id)
    problem = enterprise_number_problem(company)
    if problem is not None:
        raise ValueError(f"the channel's enterprise number is not valid: {problem}")

    for values, role in ((senders, "sender"), (employers, "employer")):
        reason = _invalid_in_data(values, role)
        if reason is not None:
            return _refuse(reason)
    sender_numbers = _distinct(normalize_enterprise_number(s) for s in senders)
    employer_numbers = _distinct(normalize_enterprise_number(e) for e in employers)

    for sender in sender_numbers:
        if sender != company:
            return _refuse(
                f"the file names {sender} as sender, but this channel belongs to {company}: "
                "a file is sent on its sender's own channel"
            )

    warnings: list[str] = []
    if quality == "employer":
        for employer in employer_numbers:
            if employer != company:
                return _refuse(
                    f"the file is for employer {employer}, but this channel's company is "
                    f"{company}: an employer sends only for its own enterprise number"
                )
        if not employer_numbers:
            warnings.append(
                f"no employer enterprise number found in the file; taken to be {company}"
            )
    elif quality in MANDATARY_QUALITIES:
        if not employer_numbers:
            return _refuse("no employer enterprise number found in the file")
        if mandates is None:
            warnings.extend(
                f"no mandate list configured; cannot check that {employer} has given a mandate"
                for employer in employer_numbers
            )
        else:
            allowed = {normalize_enterprise_number(m) for m in mandates}
            for employer in employer_numbers:
                if employer not in allowed:
                    return _refuse(
                        f"employer {employer} has given {company} no mandate: "
                        "it is not in the mandate list"
                    )
    # training_provider: the file may name a participant's employer; no mandate needed.
    return IdentityVerdict(ok=True, reason=None, warnings=tuple(warnings))
