"""The header of every form a sent file holds, so that a reply naming it can be tied back.

Some notifications carry no ``FileReference``; the platform then names the declaration
it answers only by ``HandledOriginalForm`` (the sent form's ``Identification``,
``FormCreationDate`` and ``FormCreationHour``) and, where given, the declarant's own
reference (``Reference`` with ``ReferenceOrigin`` 1). Other clients tie such replies
by those values, so flad records them for every ``Form`` of a file when it checks it.

The file is read as a stream with only the form headers kept: a DmfA of 50 MiB holds
thousands of records under a few forms, and its tree must not be built a second time
just for four values per form. Bytes in, values out; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from lxml import etree

from flad.xmlcheck import drop_complete

_CHUNK = 1024 * 1024
_HEADER = ("Identification", "FormCreationDate", "FormCreationHour")
_DECLARANT_ORIGIN = "1"
#: a file with more forms than this is not a declaration file flad knows; stop there
MAX_FORMS = 100_000


@dataclass(frozen=True)
class SentForm:
    """What identifies one form of a sent file, as a reply may name it."""

    identification: str
    creation_date: str
    creation_hour: str
    declarant_reference: str | None = None


def may_hold_forms(data: bytes) -> bool:
    """False when the bytes surely hold no ``Form`` element (two quick scans, in C).

    Most files of flad's own stand-in layout hold none: they are not parsed again.
    """
    return b"<Form" in data or b":Form" in data


def extract(data: bytes) -> tuple[SentForm, ...]:
    """The header of each ``Form`` that has all three of its header zones.

    Only a ``Form`` that is a child of the root counts (the platform's layouts put
    them there). A file that cannot be parsed gives what was read before the error:
    the check has already accepted the file, so that only happens for layouts this
    reading does not cover, and tying by form is then simply not possible.
    """
    return tuple(_forms(data))


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _forms(data: bytes) -> Iterator[SentForm]:
    # Only the header zones raise events (libxml2 filters the rest in C); after each
    # chunk every complete element is dropped, as flad.xmlcheck's stream check does,
    # so memory holds one chunk and the open path, whatever the file's size.
    parser = etree.XMLPullParser(
        events=("end",), tag=[f"{{*}}{n}" for n in (*_HEADER, "Reference")],
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True,
        remove_comments=True, remove_pis=True)
    form: etree._Element | None = None
    header: dict[str, str] = {}
    declarant: str | None = None
    found = 0
    root: etree._Element | None = None
    view = memoryview(data)
    try:
        for offset in range(0, len(view), _CHUNK):
            parser.feed(bytes(view[offset:offset + _CHUNK]))
            for _event, item in parser.read_events():
                element = cast("etree._Element", item)
                parent = element.getparent()
                if parent is None or _local(parent) != "Form":
                    continue
                top = parent.getparent()
                if top is None or top.getparent() is not None:
                    continue  # a Form that is not a child of the root
                root = top
                if parent is not form:
                    if form is not None and (sent := _sent(header, declarant)) is not None:
                        found += 1
                        yield sent
                    form, header, declarant = parent, {}, None
                name = _local(element)
                if name == "Reference":
                    declarant = declarant or _declarant(element)
                elif name not in header:
                    header[name] = (element.text or "").strip()
            if found >= MAX_FORMS:
                return
            drop_complete(root)
        parser.close()
    except etree.LxmlError:
        pass
    if form is not None and (sent := _sent(header, declarant)) is not None:
        yield sent


def _sent(header: dict[str, str], declarant: str | None) -> SentForm | None:
    if not all(header.get(n) for n in _HEADER):
        return None
    return SentForm(header["Identification"], header["FormCreationDate"],
                    header["FormCreationHour"], declarant)


def _declarant(reference: etree._Element) -> str | None:
    fields = {_local(c): (c.text or "").strip() for c in reference if isinstance(c.tag, str)}
    if fields.get("ReferenceOrigin") == _DECLARANT_ORIGIN and fields.get("ReferenceNbr"):
        return fields["ReferenceNbr"]
    return None
