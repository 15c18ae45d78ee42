"""The platform's replies read as its official schemas define them: bytes in, values out.

Receipts (root ``ACRF``, ``ACRF_20223.xsd`` / ``ACRF_20231.xsd``) and notifications
(root ``NOTIFICATION``, ``NOTIFICATION_20223.xsd``) hold one or more ``Form``; a
notification file holds one form per handled declaration, so every form is read, never
only the first. Other replies (``IDFLUX``, ``DMNO``, ...) are read as far as the form
header that every layout of the platform shares, which is what tying and listing need.

The meaning of the codes comes from the glossaries (``VersCpltACR20231NL.xml``,
``VersCpltNotification20231NL.xml``): ``ResultCode`` 0 NOK, 1 OK, 2 proposal to
validate, 3 temporary answer, 4 timeout; ``TypeForm`` PA provisional answer, FA final
answer; ``ReferenceOrigin`` 1 the declarant's own reference, 2 a social-security ticket;
``AnomalyClass`` B blocking. The labels of ACRF error codes are the platform's text
(annex 30, ``ErrorCodes2022-1_30.xml``), which flad does not ship: an admin names the
file as downloaded from the portal and :func:`parse_error_codes` reads it.

No I/O here: the poller reads files and the journal, this module only reads bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

from flad import xmlcheck

RECEIPT = "ACRF"
NOTIFICATION = "NOTIFICATION"
#: HandlingResult/ResultCode, per the notification glossary (zone 00107).
RESULT_MEANINGS = {0: "NOK", 1: "OK", 2: "proposal to validate", 3: "temporary answer",
                   4: "timeout"}
#: ReceptionResult/ResultCode of a receipt.
RECEPTION_MEANINGS = {0: "refused", 1: "accepted"}
#: TypeForm values of replies (zone 00297).
PROVISIONAL = "PA"
FINAL = "FA"
TEMPORARY_RESULT = 3
DECLARANT_ORIGIN = "1"
TICKET_ORIGIN = "2"
BLOCKING_CLASS = "B"
_CODE_IN_ID = re.compile(r"(?:^|-)(\d{3})$")


@dataclass(frozen=True)
class Reference:
    """A ``Reference``, ``HandledReference`` or ``FileReference`` number and who made it."""

    number: str | None
    origin: str | None
    type: str | None = None


@dataclass(frozen=True)
class FileReference:
    """``FileReference``: the name of the set a reply answers, and its ticket."""

    file_name: str | None
    origin: str | None
    number: str | None


@dataclass(frozen=True)
class OriginalForm:
    """``HandledOriginalForm``: the header of the form that was sent, as the platform read it."""

    identification: str | None
    creation_date: str | None
    creation_hour: str | None
    type_form: str | None = None


@dataclass(frozen=True)
class Anomaly:
    """One ``AnomalyReport``; ``path`` keeps the ``Path`` block's child elements in order."""

    error_id: str
    anomaly_class: str | None
    label: str | None
    tag: str | None
    value: str | None
    location: tuple[tuple[str, str], ...]
    path: tuple[tuple[str, str], ...]

    @property
    def blocking(self) -> bool:
        return (self.anomaly_class or "").upper() == BLOCKING_CLASS

    @property
    def worker(self) -> str | None:
        """The worker it concerns: the INSS of its ``Path``, when there is one."""
        return dict(self.path).get("INSS")

    def as_json(self, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The JSON shape of `flad status --json`; a missing label may come from `labels`."""
        location = {_LOCATION_KEYS.get(k, k): v for k, v in self.location}
        return {"error_id": self.error_id, "class": self.anomaly_class,
                "label": self.label or label_for(self.error_id, labels),
                "tag": self.tag, "value": self.value, "location": location or None,
                "path": dict(self.path)}


_LOCATION_KEYS = {"LineNbr": "line", "ColumnNbr": "column", "Location": "location"}


@dataclass(frozen=True)
class ReplyForm:
    """One ``Form`` of a reply, every zone flad uses."""

    identification: str | None
    creation_date: str | None
    creation_hour: str | None
    type_form: str | None
    file_reference: FileReference | None
    #: ReceptionResult/ResultCode of a receipt (None in a notification)
    reception_result: int | None
    #: every ReceptionResult/ErrorID, in order
    error_ids: tuple[str, ...]
    handled_form: OriginalForm | None
    handled_reference: Reference | None
    references: tuple[Reference, ...]
    employer: tuple[tuple[str, str], ...]
    #: HandlingResult/ResultCode of a notification (None in a receipt)
    result: int | None
    anomalies: tuple[Anomaly, ...]

    @property
    def provisional(self) -> bool:
        """A provisional answer (PA) or a temporary result (3): a final one is still to come."""
        return self.type_form == PROVISIONAL or self.result == TEMPORARY_RESULT

    @property
    def declarant_reference(self) -> str | None:
        """The declarant's own reference (``Reference`` with ``ReferenceOrigin`` 1)."""
        return next((r.number for r in self.references
                     if r.origin == DECLARANT_ORIGIN and r.number), None)

    @property
    def tickets(self) -> tuple[str, ...]:
        """Every social-security ticket the form names: FileReference first."""
        found: list[str] = []
        if self.file_reference is not None and self.file_reference.number:
            found.append(self.file_reference.number)
        handled = (self.handled_reference,) if self.handled_reference else ()
        for ref in (*self.references, *handled):
            if ref.origin == TICKET_ORIGIN and ref.number and ref.number not in found:
                found.append(ref.number)
        return tuple(found)

    @property
    def blocking(self) -> int:
        return sum(1 for a in self.anomalies if a.blocking)

    @property
    def result_meaning(self) -> str | None:
        if self.result is None:
            return None
        return RESULT_MEANINGS.get(self.result, f"unknown result {self.result}")


@dataclass(frozen=True)
class Reply:
    """A reply file: its root element's name and its forms."""

    kind: str
    forms: tuple[ReplyForm, ...]


class ReplyUnreadable(ValueError):
    """The bytes are not a reply flad can read (one line, for the log)."""


def parse_reply(data: bytes) -> Reply:
    """Every form of a reply; raises :class:`ReplyUnreadable` with a one-line reason."""
    try:
        root = xmlcheck.parse_hardened(data).getroot()
    except xmlcheck.XmlRejected as exc:
        raise ReplyUnreadable(str(exc)) from None
    kind = etree.QName(root).localname
    forms = tuple(_form(f) for f in _children(root, "Form"))
    return Reply(kind, forms)


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _children(parent: etree._Element | None, name: str) -> list[etree._Element]:
    if parent is None:
        return []
    return [c for c in parent if isinstance(c.tag, str) and _local(c) == name]


def _child(parent: etree._Element | None, name: str) -> etree._Element | None:
    found = _children(parent, name)
    return found[0] if found else None


def _text(parent: etree._Element | None, name: str) -> str | None:
    element = _child(parent, name)
    if element is None:
        return None
    text = "".join(map(str, element.itertext())).strip()
    return text or None


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _pairs(parent: etree._Element | None) -> tuple[tuple[str, str], ...]:
    """The simple child elements of a block, as (name, text) in document order."""
    if parent is None:
        return ()
    return tuple((_local(c), "".join(map(str, c.itertext())).strip())
                 for c in parent if isinstance(c.tag, str))


def _reference(element: etree._Element | None) -> Reference | None:
    if element is None:
        return None
    return Reference(_text(element, "ReferenceNbr"), _text(element, "ReferenceOrigin"),
                     _text(element, "ReferenceType"))


def _form(form: etree._Element) -> ReplyForm:
    file_ref = _child(form, "FileReference")
    reception = _child(form, "ReceptionResult")
    handled = _child(form, "HandledOriginalForm")
    handling = _child(form, "HandlingResult")
    return ReplyForm(
        identification=_text(form, "Identification"),
        creation_date=_text(form, "FormCreationDate"),
        creation_hour=_text(form, "FormCreationHour"),
        type_form=_text(form, "TypeForm"),
        file_reference=None if file_ref is None else FileReference(
            _text(file_ref, "FileName"), _text(file_ref, "ReferenceOrigin"),
            _text(file_ref, "ReferenceNbr")),
        reception_result=_int(_text(reception, "ResultCode")),
        error_ids=tuple(t for e in _children(reception, "ErrorID")
                        if (t := "".join(map(str, e.itertext())).strip())),
        handled_form=None if handled is None else OriginalForm(
            _text(handled, "Identification"), _text(handled, "FormCreationDate"),
            _text(handled, "FormCreationHour"), _text(handled, "TypeForm")),
        handled_reference=_reference(_child(form, "HandledReference")),
        references=tuple(r for e in _children(form, "Reference")
                         if (r := _reference(e)) is not None),
        employer=_pairs(_child(form, "EmployerId")),
        result=_int(_text(handling, "ResultCode")),
        anomalies=tuple(_anomaly(a) for a in _children(handling, "AnomalyReport")),
    )


def _anomaly(report: etree._Element) -> Anomaly:
    return Anomaly(
        error_id=_text(report, "ErrorID") or "",
        anomaly_class=_text(report, "AnomalyClass"),
        label=_text(report, "AnomalyLabel"),
        tag=_text(report, "TagName"),
        value=_text(report, "Value"),
        location=_pairs(_child(report, "AnomalyLocation")),
        path=_pairs(_child(report, "Path")),
    )


# -- error code labels (annex 30) ------------------------------------------------------

def parse_error_codes(data: bytes, language: str = "fr") -> dict[str, str]:
    """``code -> label`` from the platform's list of error codes as published.

    The list (``error-codes/error-code/{code, description/{nl, fr}}``) is the file an
    admin downloads from the portal; a label in ``language`` is taken, the other
    language when that one is empty. Raises ValueError when the file is not that list.
    """
    try:
        root = xmlcheck.parse_hardened(data).getroot()
    except xmlcheck.XmlRejected as exc:
        raise ValueError(f"not a readable list of error codes: {exc}") from None
    if _local(root) != "error-codes":
        raise ValueError(f"not a list of error codes: the root is {_local(root)!r}, "
                         "expected 'error-codes'")
    other = "nl" if language == "fr" else "fr"
    labels: dict[str, str] = {}
    for entry in _children(root, "error-code"):
        code = _text(entry, "code")
        description = _child(entry, "description")
        label = _text(description, language) or _text(description, other)
        if code and label:
            labels[code] = " ".join(label.split())
    if not labels:
        raise ValueError("the list of error codes holds no code with a description")
    return labels


def label_for(error_id: str, labels: Mapping[str, str] | None) -> str | None:
    """The label of an ErrorID (``ACRF-088``, ``00011-155``): its last three digits' code."""
    if not labels:
        return None
    match = _CODE_IN_ID.search(error_id.strip())
    return labels.get(match.group(1)) if match else None
