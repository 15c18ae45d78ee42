"""What the sandbox's transfer point answers: ACRF receipts, NOTI notifications, reply sets.

The XML shapes are the contract with flad's reply parser (see DOMAIN.md); element
names and nesting must not drift:

- ACRF: ``ACRF/Form/{Identification=ACRF001, FormCreationDate, FormCreationHour,
  AttestationStatus=0, TypeForm=FA, FileReference/{FileName, ReferenceOrigin=2,
  ReferenceNbr}, ReceptionResult/{ResultCode[, ErrorID, ErrorDescription]}}``
- NOTI: ``NOTI/Form/{Identification=NOTI001, FormCreationDate, FormCreationHour,
  Reference/{ReferenceType=1, ReferenceNbr, FileName}, HandlingResult/ResultCode,
  Declaration*/{DeclarationNbr, HandlingResult/ResultCode, AnomalyReport*/{ErrorID,
  AnomalyClass, Path, Description}}}``

Declarations of a file in the stand-in layout (``flad/data/standin-fla.xsd``) are its
``Training`` elements; a Training may ask for anomalies with
``<Anomaly>B:FLA-00012</Anomaly>`` (blocking) or ``W:FLA-00100`` (warning), several
separated by spaces, commas or semicolons, each optionally naming the element it is
about (``B:FLA-00012:Hours`` gives the path ``/FLADeclaration/Training[1]/Hours``).
Any other file is one declaration without anomaly.

A reply set is published like the platform does it, so that a client listing the
folder never sees a GO before its data: FO and FS are written under a temporary name in
the sandbox's private folder, fsynced, renamed into place, and only then the GO.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import string
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from flad import durable, naming, signing

__all__ = [
    "STANDIN_NAMESPACE",
    "TRANSFER_POINT_SENDER",
    "Anomaly",
    "Declaration",
    "ReplyPublisher",
    "acrf_body",
    "declarations_of",
    "new_reference",
    "noti_body",
]

STANDIN_NAMESPACE = "urn:flad:standin:fla:1"
TRANSFER_POINT_SENDER = "999999"
UNREADABLE_REQUEST_ID = "SBX-00001"

_REFERENCE_ALPHABET = string.digits + string.ascii_uppercase
_REFERENCE_LENGTH = 13
_MAX_TEXT = 500
_TOKEN_SPLIT = re.compile(r"[\s,;]+")
_ANOMALY_REQUEST = re.compile(
    r"(?P<cls>[BWbw]):(?P<id>[A-Za-z0-9][A-Za-z0-9-]{0,39})(?::(?P<field>[A-Za-z_][\w.-]{0,63}))?"
)


@dataclass(frozen=True)
class Anomaly:
    """One AnomalyReport of a declaration."""

    error_id: str
    anomaly_class: str  # "B" blocking, "W" warning
    path: str
    description: str

    @property
    def blocking(self) -> bool:
        """A blocking anomaly makes its declaration (and the file) fail."""
        return self.anomaly_class == "B"


@dataclass(frozen=True)
class Declaration:
    """One declaration of a file and what the application found in it."""

    number: int
    anomalies: tuple[Anomaly, ...] = ()

    @property
    def accepted(self) -> bool:
        """Accepted unless one of its anomalies is blocking."""
        return not any(a.blocking for a in self.anomalies)


def new_reference() -> str:
    """A 13-character alphanumeric ReferenceNbr, random enough never to repeat."""
    return "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(_REFERENCE_LENGTH))


def _clean(text: str) -> str:
    """One printable line: file names and reasons may come from a hostile client."""
    flat = " ".join(text.split())
    flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    return flat if len(flat) <= _MAX_TEXT else flat[: _MAX_TEXT - 3] + "..."


def _requested_anomalies(text: str, number: int) -> list[Anomaly]:
    base = f"/FLADeclaration/Training[{number}]"
    found: list[Anomaly] = []
    for token in _TOKEN_SPLIT.split(text.strip()):
        if not token:
            continue
        match = _ANOMALY_REQUEST.fullmatch(token)
        if match is None:
            found.append(
                Anomaly(
                    UNREADABLE_REQUEST_ID,
                    "W",
                    f"{base}/Anomaly",
                    f"the sandbox cannot read the anomaly request {token!r} "
                    "(expected B:CODE or W:CODE, optionally :Element)",
                )
            )
            continue
        cls = match["cls"].upper()
        kind = "blocking" if cls == "B" else "non-blocking"
        path = base + (f"/{match['field']}" if match["field"] else "")
        found.append(
            Anomaly(
                match["id"],
                cls,
                path,
                f"{kind} anomaly {match['id']} asked for by the file (sandbox)",
            )
        )
    return found


def declarations_of(tree: etree._ElementTree) -> list[Declaration]:
    """The declarations of a parsed file, with the anomalies it asks for."""
    root = tree.getroot()
    if root.tag != f"{{{STANDIN_NAMESPACE}}}FLADeclaration":
        return [Declaration(1)]
    trainings = root.findall(f"{{{STANDIN_NAMESPACE}}}Training")
    if not trainings:
        return [Declaration(1)]
    result: list[Declaration] = []
    for number, training in enumerate(trainings, start=1):
        anomalies: list[Anomaly] = []
        for request in training.findall(f"{{{STANDIN_NAMESPACE}}}Anomaly"):
            anomalies += _requested_anomalies("".join(map(str, request.itertext())), number)
        result.append(Declaration(number, tuple(anomalies)))
    return result


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = _clean(text)
    return element


def _form(root_tag: str, identification: str, now: datetime.datetime) -> tuple[
    etree._Element, etree._Element
]:
    root = etree.Element(root_tag)
    form = _sub(root, "Form")
    _sub(form, "Identification", identification)
    _sub(form, "FormCreationDate", now.strftime("%Y-%m-%d"))
    _sub(form, "FormCreationHour", f"{now:%H:%M:%S}.{now.microsecond // 1000:03d}")
    return root, form


def _serialize(root: etree._Element) -> bytes:
    body: bytes = etree.tostring(root, encoding="UTF-8", pretty_print=True)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def acrf_body(
    *,
    file_name: str,
    reference: str,
    now: datetime.datetime,
    error: tuple[str, str] | None = None,
) -> bytes:
    """An ACRF receipt: positive without ``error``, else ResultCode 0 with (ErrorID, reason)."""
    root, form = _form("ACRF", "ACRF001", now)
    _sub(form, "AttestationStatus", "0")
    _sub(form, "TypeForm", "FA")
    ref = _sub(form, "FileReference")
    _sub(ref, "FileName", file_name)
    _sub(ref, "ReferenceOrigin", "2")
    _sub(ref, "ReferenceNbr", reference)
    result = _sub(form, "ReceptionResult")
    _sub(result, "ResultCode", "1" if error is None else "0")
    if error is not None:
        _sub(result, "ErrorID", error[0])
        _sub(result, "ErrorDescription", error[1])
    return _serialize(root)


def noti_body(
    *,
    reference: str,
    file_name: str,
    declarations: Sequence[Declaration],
    now: datetime.datetime,
) -> bytes:
    """A NOTI: the file-level result (0 when any blocking anomaly) and one per declaration."""
    root, form = _form("NOTI", "NOTI001", now)
    ref = _sub(form, "Reference")
    _sub(ref, "ReferenceType", "1")
    _sub(ref, "ReferenceNbr", reference)
    _sub(ref, "FileName", file_name)
    accepted = all(d.accepted for d in declarations)
    _sub(_sub(form, "HandlingResult"), "ResultCode", "1" if accepted else "0")
    for declaration in declarations:
        element = _sub(form, "Declaration")
        _sub(element, "DeclarationNbr", str(declaration.number))
        _sub(_sub(element, "HandlingResult"), "ResultCode", "1" if declaration.accepted else "0")
        for anomaly in declaration.anomalies:
            report = _sub(element, "AnomalyReport")
            _sub(report, "ErrorID", anomaly.error_id)
            _sub(report, "AnomalyClass", anomaly.anomaly_class)
            _sub(report, "Path", anomaly.path)
            _sub(report, "Description", anomaly.description)
    return _serialize(root)


class ReplyPublisher:
    """Writes reply sets (FO, FS, then GO) into OUT/OUTTEST, signed with the sandbox's key."""

    def __init__(self, tmp_dir: Path, signer: signing.Signer) -> None:
        self._tmp_dir = tmp_dir
        self._signer = signer
        self._lock = threading.Lock()
        self.published: list[Path] = []
        """Every file put in place, in the order it appeared (for tests and logs)."""

    def _place(self, folder: Path, name: str, data: bytes) -> None:
        tmp = self._tmp_dir / f"{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, folder / name)
        durable.fsync_dir(folder)
        with self._lock:
            self.published.append(folder / name)

    def publish(
        self,
        folder: Path,
        application: str,
        date: datetime.date,
        sequence: str,
        environment: str,
        body: bytes,
    ) -> str:
        """Put one reply set in ``folder``; returns the FO name. GO comes last, always."""
        fo = naming.FileName(
            "FO", application, TRANSFER_POINT_SENDER, date, sequence, environment
        )
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self._place(folder, str(fo), body)
        self._place(folder, str(fo.with_type("FS")), signing.make_fs(body, self._signer))
        self._place(folder, str(fo.with_type("GO")), b"")
        return str(fo)
