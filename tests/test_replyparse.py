"""Replies read as the official schemas define them (flad.replyparse), and sent form headers
(flad.sentforms): pure functions, bytes in, values out.

Where ../shared/platform is present, every documentation example that is a reply is
read field for field as its glossary describes; the other tests build files like them.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from flad import replyparse, replyunpack, sentforms
from flad.replyparse import Anomaly, parse_error_codes, parse_reply
from tests.replysets import PLATFORM, acrf, anomaly, noti_form, notification, platform_file

SMALL_ERROR_CODES = """<?xml version="1.0" encoding="utf-8"?>
<error-codes>
  <error-code><code>088</code><description><nl>Schema niet gekend</nl>
    <fr>Schéma Inconnu</fr></description>
    <begin-validity><year>1900</year><quarter>1</quarter></begin-validity>
    <end-validity><year>9999</year><quarter>4</quarter></end-validity></error-code>
  <error-code><code>172</code><description><nl>Te veel aangiften</nl><fr></fr></description>
  </error-code>
</error-codes>
""".encode()


# -- the documentation examples ----------------------------------------------------------


@pytest.mark.parametrize("name", ["ACRF_20231_1.xml", "ACRF_20223_1.xml"])
def test_example_receipts_field_for_field(name: str) -> None:
    reply = parse_reply(platform_file(f"examples/{name}").read_bytes())
    assert reply.kind == "ACRF"
    (form,) = reply.forms
    assert form.identification == "ACRF001"
    assert form.creation_date in ("2025-11-16", "2025-08-16")
    assert form.creation_hour == "15:29:46.123"
    assert form.type_form == "PA"  # the examples carry a provisional answer
    assert form.file_reference == replyparse.FileReference(
        "GO.DMPI.012996.20090718.50002.R.1", "2", "3400001Y1P01G")
    assert (form.reception_result, form.error_ids) == (1, ())
    assert form.tickets == ("3400001Y1P01G",)
    assert form.result is None and form.anomalies == ()


def test_example_notification_field_for_field() -> None:
    reply = parse_reply(platform_file("examples/NOTIFICATION_20223_1.xml").read_bytes())
    assert reply.kind == "NOTIFICATION"
    (form,) = reply.forms
    assert (form.identification, form.creation_date, form.creation_hour, form.type_form) == (
        "NOTI001", "2022-08-16", "16:00:41.628", "FA")
    assert form.file_reference == replyparse.FileReference(
        "GO.AOAT.000001.20090728.00901.R", "2", "380000B5WX004")
    assert form.handled_form == replyparse.OriginalForm(
        "AOAT001", "2009-01-22", "09:43:00.002", "SU")
    assert form.handled_reference == replyparse.Reference("340000JEDT00A", "2", "1")
    assert form.references == ()
    assert form.declarant_reference is None
    assert form.employer == (("NOSSRegistrationNbr", "70500472"), ("CompanyID", "400767772"))
    assert (form.result, form.result_meaning, form.provisional) == (1, "OK", False)
    assert form.anomalies == ()
    # the file's ticket first, then the declaration's
    assert form.tickets == ("380000B5WX004", "340000JEDT00A")


def test_example_idflux_is_read_as_far_as_its_form_header() -> None:
    reply = parse_reply(platform_file("examples/IDFLUX_20231_1.xml").read_bytes())
    assert reply.kind == "IDFLUX"
    (form,) = reply.forms
    assert (form.identification, form.type_form, form.file_reference) == ("IDFLUX", "SU", None)
    assert form.references == (replyparse.Reference("340000LKFR007", "2", "1"),)


# -- built like the examples -------------------------------------------------------------


def test_a_receipt_keeps_every_error_code() -> None:
    (form,) = parse_reply(acrf("GO.X", errors=("ACRF-088", "ACRF-172"))).forms
    assert (form.reception_result, form.error_ids) == (0, ("ACRF-088", "ACRF-172"))
    assert form.type_form == "FA"


def test_every_form_and_every_zone_of_an_anomaly() -> None:
    data = notification(
        noti_form(file_name="GO.A", result=0, anomalies=(
            anomaly("00011-155", "B", label="Ongeldig RSZ-nummer"),
            anomaly("00024-003", "W", label=None, tag=None, value=None, inss=None,
                    line=None))),
        noti_form(handled=("DIMONA", "2023-02-06", "14:35:00.000"), declarant="MY-REF",
                  type_form="PA", result=3))
    first, second = parse_reply(data).forms
    assert (first.result, first.result_meaning, first.blocking) == (0, "NOK", 1)
    blocking, warning = first.anomalies
    assert blocking == Anomaly(
        error_id="00011-155", anomaly_class="B", label="Ongeldig RSZ-nummer", tag="Hours",
        value="25", location=(("LineNbr", "12"), ("ColumnNbr", "7")),
        path=(("NOSSRegistrationNbr", "199999934"), ("INSS", "85073003328")))
    assert blocking.blocking and blocking.worker == "85073003328"
    assert blocking.as_json() == {
        "error_id": "00011-155", "class": "B", "label": "Ongeldig RSZ-nummer", "tag": "Hours",
        "value": "25", "location": {"line": "12", "column": "7"},
        "path": {"NOSSRegistrationNbr": "199999934", "INSS": "85073003328"}}
    assert not warning.blocking and warning.worker is None
    assert warning.as_json()["path"] == {} and warning.as_json()["location"] is None
    assert second.file_reference is None
    assert second.handled_form == replyparse.OriginalForm(
        "DIMONA", "2023-02-06", "14:35:00.000")
    assert second.declarant_reference == "MY-REF"
    assert second.provisional and second.result_meaning == "temporary answer"


@pytest.mark.parametrize(("result", "meaning"), [
    (0, "NOK"), (1, "OK"), (2, "proposal to validate"), (3, "temporary answer"),
    (4, "timeout")])
def test_result_codes_mean_what_the_glossary_says(result: int, meaning: str) -> None:
    (form,) = parse_reply(notification(noti_form(file_name="GO.A", result=result))).forms
    assert form.result_meaning == meaning
    assert form.provisional == (result == 3)


def test_a_provisional_answer_is_provisional_whatever_its_result() -> None:
    (form,) = parse_reply(notification(noti_form(file_name="GO.A", type_form="PA"))).forms
    assert form.provisional


@pytest.mark.parametrize("data", [b"", b"<ACRF><Form>", b"<!DOCTYPE x []><x/>", b"\xff\xfe"])
def test_unreadable_replies_give_one_line(data: bytes) -> None:
    with pytest.raises(replyparse.ReplyUnreadable) as caught:
        parse_reply(data)
    assert "\n" not in str(caught.value) and str(caught.value)


# -- error code labels ---------------------------------------------------------------------


def test_labels_from_a_list_built_like_the_official_one() -> None:
    labels = parse_error_codes(SMALL_ERROR_CODES)
    assert labels == {"088": "Schéma Inconnu", "172": "Te veel aangiften"}  # fr, else nl
    assert parse_error_codes(SMALL_ERROR_CODES, "nl")["088"] == "Schema niet gekend"
    assert replyparse.label_for("ACRF-088", labels) == "Schéma Inconnu"
    assert replyparse.label_for("00011-172", labels) == "Te veel aangiften"
    assert replyparse.label_for("ACRF-999", labels) is None
    assert replyparse.label_for("ACRF-088", None) is None


def test_labels_from_the_official_list() -> None:
    labels = parse_error_codes(platform_file("glossaries/ErrorCodes2022-1_30.xml").read_bytes())
    assert len(labels) > 400
    assert labels["088"] == "Schéma Inconnu"
    assert replyparse.label_for("ACRF-172", labels) is not None
    assert "déclarations" in (replyparse.label_for("ACRF-172", labels) or "")


@pytest.mark.parametrize("data", [b"<other/>", b"<error-codes/>", b"not xml"])
def test_a_file_that_is_not_the_list_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_error_codes(data)


def test_flad_ships_no_list_of_error_codes() -> None:
    package = Path(replyparse.__file__).parent
    assert not [p for p in package.rglob("*") if "ErrorCodes" in p.name
                or b"<error-codes" in (p.read_bytes()[:4096] if p.is_file() else b"")]


# -- sent forms -------------------------------------------------------------------------------


def _dimona(forms: int, *, records: int = 0, hour: str = "14:35:00.000") -> bytes:
    record = b"<DimonaIn><StartingDate>2023-02-08</StartingDate>" + b"<X>y</X>" * 8 + \
        b"</DimonaIn>"
    body = b"".join(
        b"<Form><Identification>DIMONA</Identification>"
        b"<FormCreationDate>2023-02-06</FormCreationDate>"
        + f"<FormCreationHour>{hour[:-3]}{i:03d}</FormCreationHour>".encode()
        + b"<AttestationStatus>0</AttestationStatus><TypeForm>SU</TypeForm>"
        b"<Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>2</ReferenceOrigin>"
        b"<ReferenceNbr>TICKET</ReferenceNbr></Reference>"
        b"<Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>1</ReferenceOrigin>"
        + f"<ReferenceNbr>OWN-{i}</ReferenceNbr></Reference>".encode()
        + record * records + b"</Form>" for i in range(forms))
    return b'<?xml version="1.0"?>\n<Dimona>' + body + b"</Dimona>"


def test_sent_forms_are_read_with_their_declarant_reference() -> None:
    assert sentforms.extract(_dimona(2)) == (
        sentforms.SentForm("DIMONA", "2023-02-06", "14:35:00.000", "OWN-0"),
        sentforms.SentForm("DIMONA", "2023-02-06", "14:35:00.001", "OWN-1"))


def test_sent_forms_of_the_official_examples() -> None:
    if not PLATFORM.is_dir():
        pytest.skip("../shared/platform is not here")
    dmfa = sentforms.extract(platform_file("examples/DmfAOriginal_20223_1.xml").read_bytes())
    assert dmfa == (sentforms.SentForm("DMFA", "2022-08-11", "08:45:00.000", "DMFA TEST"),)
    generic = sentforms.extract(
        platform_file("examples/GenericXmlDocument_20231_1.xml").read_bytes())
    assert [f.identification for f in generic] == ["ECOUDRQ", "ECOUDRQ"]  # in a namespace


def test_a_file_without_forms_has_none() -> None:
    sample = (Path(sentforms.__file__).parent / "data" / "sample-fla.xml").read_bytes()
    assert sentforms.extract(sample) == ()
    assert not sentforms.may_hold_forms(sample)  # not even parsed
    assert sentforms.may_hold_forms(_dimona(1))
    assert sentforms.may_hold_forms(b'<g:Doc xmlns:g="urn:g"><g:Form/></g:Doc>')
    assert sentforms.extract(b"") == ()
    assert sentforms.extract(b"<Dimona><Form><Identification>X</Identification></Form>") == ()


_STREAM_PROBE = """
import resource, sys
from tests.test_replyparse import _dimona
from flad import sentforms
data = _dimona(3, records=60_000)
assert len(data) >= 16 * 1024 * 1024
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
forms = sentforms.extract(data)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print([f.declarant_reference for f in forms], (after - before) // 1024)
"""


def test_a_big_file_is_read_as_a_stream() -> None:
    """21 MiB of records under three forms (a checked-as-a-stream size): the headers only."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _STREAM_PROBE], cwd=root, check=True,
                         capture_output=True, text=True, timeout=120).stdout.split("] ")
    assert out[0] + "]" == "['OWN-0', 'OWN-1', 'OWN-2']"
    grown_mib = int(out[1])
    assert grown_mib < 40, grown_mib  # the tree of the whole file would be ~10 times its size


# -- CO archives --------------------------------------------------------------------------------


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_a_zip_of_one_entry_is_unpacked(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "CO.NOTI", {"FO.NOTI.xml": b"<NOTIFICATION/>"})
    assert replyunpack.unpack_single(archive, tmp_path / "out") == 15
    assert (tmp_path / "out").read_bytes() == b"<NOTIFICATION/>"


@pytest.mark.parametrize("case", ["two entries", "not a zip", "bomb", "too big"])
def test_bad_archives_are_refused_with_a_reason(tmp_path: Path, case: str) -> None:
    archive = tmp_path / "CO.NOTI"
    limits: dict[str, int] = {}
    if case == "two entries":
        _zip(archive, {"a": b"1", "b": b"2"})
    elif case == "not a zip":
        archive.write_bytes(b"<NOTIFICATION/>")
    elif case == "bomb":
        _zip(archive, {"a": b"\0" * 5_000_000})  # ~1000 times smaller zipped
    else:
        _zip(archive, {"a": bytes(range(256)) * 40})
        limits = {"max_bytes": 1000}
    with pytest.raises(replyunpack.UnpackRefused) as caught:
        replyunpack.unpack_single(archive, tmp_path / "out", **limits)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()
