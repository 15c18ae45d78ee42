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
    "EmployerRef",
    "FormIdentity",
    "IdentityVerdict",
    "check_forms",
    "check_identity",
    "enterprise_number_problem",
    "is_valid_enterprise_number",
    "normalize_enterprise_number",
    "normalize_noss_number",
    "noss_check_problem",
    "noss_number_problem",
    "parse_mandate_numbers",
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


# --- ONSS registration numbers ---------------------------------------------------------
#
# The DmfA, DIMONA and generic schemas name an employer by its ONSS registration number
# (``NOSSRegistrationNbr``, glossary zone 00011: "0 ou NNNNNNNCC", CC a check number)
# and/or its enterprise number (``CompanyID``, zone 00014: 0 when not known). The
# glossaries name the anomaly "invalid check number" (00011-004) but do not give the
# rule. The employer numbers of the official examples satisfy
# CC = 96 - (NNNNNNN x 100 mod 97), other numbers in them do not: so a number that
# fails it is a warning, never a refusal (the platform has the last word).

_DIGITS = re.compile(r"[0-9]+")
_NOSS_SEPARATORS = str.maketrans("", "", " .-/")
_MAX_WARNINGS = 20


def normalize_noss_number(value: str) -> str:
    """The plain 9-digit form of an ONSS number: ``"1999999-34"`` -> ``"199999934"``; no check.

    The schemas type it ``xs:integer``, so a file may write it without its leading
    zeros (``100006``) or with more of them; letters write it with dots, dashes or
    spaces. Anything that is not digits is returned compact, for the check to refuse.
    """
    compact = value.strip().translate(_NOSS_SEPARATORS)
    if compact.startswith("+"):
        compact = compact[1:]
    if _DIGITS.fullmatch(compact):
        significant = compact.lstrip("0") or "0"
        if len(significant) <= 9:
            return significant.zfill(9)
    return compact


def noss_number_problem(value: str) -> str | None:
    """None when ``value`` (normalized) has the ONSS number's shape, 9 digits, else why not."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{9}", value):
        return f"ONSS number {_quote(value)} must be 9 digits NNNNNNNCC"
    return None


def noss_check_problem(value: str) -> str | None:
    """Why a 9-digit ONSS number fails CC = 96 - (NNNNNNN x 100 mod 97), or None.

    A warning, not a refusal: see the note above.
    """
    expected = 96 - (int(value[:7]) * 100) % 97
    if int(value[7:]) == expected:
        return None
    return (f"ONSS number {value} fails the usual check (its last two digits would be "
            f"{expected:02d}); sent anyway, the platform decides")


def parse_mandate_numbers(text: str, source: str = "mandates",
                          warnings: list[str] | None = None) -> frozenset[str]:
    """A mandate list naming employers by enterprise number and/or ONSS number, one per line.

    An enterprise number comes out as 10 digits, an ONSS number as 9, so both kinds
    live in one set and never compare equal. A line of 9 digits is read as both when
    it is a valid enterprise number without its leading 0 (the legacy way of writing
    one) and as an ONSS number otherwise: a client given by either number is
    recognised. ``#`` starts a comment. A line that is neither raises ValueError
    naming ``source`` and the line; an ONSS number that fails its usual check is
    added to ``warnings`` (when given) and kept.
    """
    numbers: set[str] = set()
    for line_number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        compact = content.translate(_NOSS_SEPARATORS)
        if re.fullmatch(r"[0-9]{9}", compact):
            enterprise = "0" + compact
            if _number_detail(enterprise) is None:
                numbers.add(enterprise)
            elif warnings is not None and (check := noss_check_problem(compact)):
                warnings.append(f"{source}, line {line_number}: {check}")
            numbers.add(compact)
            continue
        number = normalize_enterprise_number(content)
        detail = _number_detail(number)
        if detail is not None:
            what = (f"is not a valid enterprise number: it {detail}"
                    if _DIGITS.fullmatch(number) and len(number) == 10 else
                    "is neither an enterprise number (10 digits, mod-97) nor an ONSS "
                    "number (9 digits)")
            raise ValueError(f"{source}, line {line_number}: {content!r} {what}")
        numbers.add(number)
    return frozenset(numbers)


@dataclass(frozen=True)
class EmployerRef:
    """How one employer is named in a form: the texts of its two numbers, None when absent."""

    enterprise: str | None
    """``CompanyID`` (or a legacy enterprise-number value), as written."""
    noss: str | None
    """``NOSSRegistrationNbr``, as written."""
    other: str | None = None
    """Another number given instead, named: ``ProvisionalNSSONbr 5000000120``."""


@dataclass(frozen=True)
class FormIdentity:
    """One form of a file, as a refusal names it, and the employers it names."""

    position: int
    """1-based position among the root's forms; 0 for "the whole file" (no profile)."""
    identification: str | None
    creation_date: str | None
    creation_hour: str | None
    employers: tuple[EmployerRef, ...]

    def label(self) -> str:
        """``form 2 (DMFA, created 2022-08-11 08:45:00.000)``, or ``the file``."""
        if self.position == 0:
            return "the file"
        details = []
        if self.identification:
            details.append(_shown(self.identification))
        created = " ".join(x for x in (self.creation_date, self.creation_hour) if x)
        if created:
            details.append(f"created {_shown(created)}")
        return f"form {self.position}" + (f" ({', '.join(details)})" if details else "")


def _shown(value: str) -> str:
    """A value from the file as text in a reason: plain when short and printable, else quoted."""
    if len(value) <= _QUOTE_LIMIT and value.isprintable():
        return value
    return _quote(value)


def _read_employer(ref: EmployerRef) -> tuple[str | None, str | None, str | None]:
    """(enterprise number, ONSS number, problem): each number normalized, None when not given.

    0 means "not given" for both (glossary zones 00011 and 00014).
    """
    enterprise = noss = None
    if ref.enterprise is not None and ref.enterprise.strip():
        raw = ref.enterprise.strip()
        if not (_DIGITS.fullmatch(raw) and int(raw) == 0):
            enterprise = normalize_enterprise_number(raw)
            detail = _number_detail(enterprise)
            if detail is not None:
                return None, None, (f"employer enterprise number {_quote(ref.enterprise.strip())} "
                                    f"is not valid: it {detail}")
    if ref.noss is not None and ref.noss.strip():
        number = normalize_noss_number(ref.noss)
        if number != "000000000":
            problem = noss_number_problem(number)
            if problem is not None:
                return None, None, (f"employer ONSS number {_quote(ref.noss.strip())} is not "
                                    "valid: it must be 9 digits NNNNNNNCC")
            noss = number
    return enterprise, noss, None


def _named(enterprise: str | None, noss: str | None) -> str:
    parts = ([f"enterprise number {enterprise}"] if enterprise else []) + (
        [f"ONSS number {noss}"] if noss else [])
    return " and ".join(parts)


def check_forms(
    *,
    quality: str,
    company_id: str,
    forms: Sequence[FormIdentity],
    senders: Sequence[str] = (),
    noss_number: str | None = None,
    mandates: frozenset[str] | None,
) -> IdentityVerdict:
    """Whether every form of a file may go out on this channel, employer by employer.

    A form's employer is named by enterprise number and/or ONSS number (0 or absent:
    not given). ``noss_number`` is the channel's own ONSS number, if configured;
    ``mandates`` holds enterprise numbers (10 digits) and ONSS numbers (9 digits), as
    :func:`parse_mandate_numbers` gives them. The first form at fault is refused,
    naming the form (position, identification, creation date and hour) and the
    number; a failed ONSS check digit is only a warning.
    """
    if isinstance(senders, str):
        raise TypeError("senders must be a sequence of numbers, not a single str")
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}, expected one of {', '.join(QUALITIES)}")
    company = normalize_enterprise_number(company_id)
    problem = enterprise_number_problem(company)
    if problem is not None:
        raise ValueError(f"the channel's enterprise number is not valid: {problem}")
    own_noss = normalize_noss_number(noss_number) if noss_number else None

    reason = _invalid_in_data(senders, "sender")
    if reason is not None:
        return _refuse(reason)
    for sender in _distinct(normalize_enterprise_number(s) for s in senders):
        if sender != company:
            return _refuse(
                f"the file names {sender} as sender, but this channel belongs to {company}: "
                "a file is sent on its sender's own channel"
            )

    warnings: dict[str, None] = {}
    for form in forms:
        where = form.label()
        if not form.employers:
            if quality == "employer":
                warnings[f"{where} names no employer; taken to be {company}"] = None
            elif quality in MANDATARY_QUALITIES:
                return _refuse(f"{where} names no employer (no enterprise number, no ONSS "
                               "number), so no mandate can be checked for it")
            continue
        for ref in form.employers:
            enterprise, noss, problem = _read_employer(ref)
            if problem is not None:
                return _refuse(f"{where}: {problem}")
            if enterprise is None and noss is None:
                if ref.other is not None and quality == "training_provider":
                    continue  # names a participant's employer: nothing to tie to the channel
                if ref.other is not None:
                    return _refuse(f"{where} names its employer only by {_shown(ref.other)}, "
                                   "which flad cannot tie to this channel: give its "
                                   "enterprise number (CompanyID) too")
                return _refuse(f"{where} names its employer by neither an enterprise number "
                               "nor an ONSS number (both absent or 0)")
            if noss is not None and (check := noss_check_problem(noss)):
                warnings[f"{where}: {check}"] = None
            refusal = _employer_refusal(quality, company, own_noss, mandates,
                                        enterprise, noss, warnings)
            if refusal is not None:
                return _refuse(f"{where}: {refusal}")
    listed = list(warnings)
    if len(listed) > _MAX_WARNINGS:
        more = len(listed) - _MAX_WARNINGS
        listed = [*listed[:_MAX_WARNINGS], f"and {more} more warning{'s' if more > 1 else ''}"]
    return IdentityVerdict(ok=True, reason=None, warnings=tuple(listed))


def _employer_refusal(quality: str, company: str, own_noss: str | None,
                      mandates: frozenset[str] | None, enterprise: str | None,
                      noss: str | None, warnings: dict[str, None]) -> str | None:
    """Why this channel may not send for the employer so named, or None."""
    if quality == "employer":
        if enterprise is not None and enterprise != company:
            return (f"the employer is enterprise number {enterprise}, but this channel's "
                    f"company is {company}: an employer sends only for itself")
        if noss is not None and own_noss is not None and noss != own_noss:
            return (f"the employer is ONSS number {noss}, but this channel's ONSS number "
                    f"is {own_noss}: an employer sends only for itself")
        if enterprise is None and own_noss is None:
            return (f"the employer is named by ONSS number {noss} only, and this channel "
                    "has no noss_number: set noss_number in its configuration")
        return None
    if quality in MANDATARY_QUALITIES:
        if mandates is None:
            warnings[f"no mandate list configured; cannot check that the employer "
                     f"({_named(enterprise, noss)}) has given a mandate"] = None
            return None
        if (enterprise is not None and enterprise in mandates) or (
                noss is not None and noss in mandates):
            return None
        return (f"the employer ({_named(enterprise, noss)}) has given {company} no mandate: "
                "neither number is in the mandate list")
    return None  # training_provider: may name a participant's employer, no mandate needed
