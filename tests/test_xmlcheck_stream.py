"""A big file is validated as a stream, with exactly the verdicts of the plain path.

Files of STREAM_BYTES or more (checked with an XSD, a root element and the default
identity XPaths) are first validated while they are parsed, the complete elements
dropped as the parse goes, so that a 50 MiB declaration of records does not become a
600 MiB tree. Here STREAM_BYTES is 0, so every file takes that way, and each verdict
is compared with the plain path of tests/test_xmlcheck_speed.py (``reference_check``):
the same CheckedDocument, or the same reason word for word.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from lxml import etree

from flad import xmlcheck
from flad.xmlcheck import CheckedDocument, XmlRejected, check_document, load_schema
from tests.hostile import corpus
from tests.test_xmlcheck_speed import (
    _KINDS_XSD,
    _STANDIN,
    ROOT,
    assert_same,
    documents,
    fla_file,
    outcome,
    sample_with_misc,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Every file streamed; records whether each stream accepted (True) or passed."""
    seen: list[bool] = []
    real = xmlcheck._accept_streaming

    def spy(data: bytes, root_at: int, schema: etree.XMLSchema | None,
            root_element: str | None) -> CheckedDocument | None:
        result = real(data, root_at, schema, root_element)
        seen.append(result is not None)
        return result

    monkeypatch.setattr(xmlcheck, "STREAM_BYTES", 0)
    monkeypatch.setattr(xmlcheck, "_accept_streaming", spy)
    yield seen


def test_a_valid_file_is_accepted_by_the_stream_alone(streamed: list[bool]) -> None:
    data = fla_file(1, 300 * 1024, "records")
    expected = CheckedDocument(ROOT, ("0123456749",), ("0123456749",))
    for xsd in (_STANDIN, None):
        for root in (ROOT, None):
            assert assert_same(data, schema=xsd, root_element=root) == expected
    assert streamed == [True] * 4


def test_a_refused_file_gets_the_tree_paths_reason(streamed: list[bool]) -> None:
    data = fla_file(1, 300 * 1024, "records").replace(b"<Hours>7.5</Hours>", b"<Hours>x</Hours>", 1)
    reason = assert_same(data, schema=_STANDIN, root_element=ROOT)
    assert isinstance(reason, str) and "does not follow the XSD" in reason
    assert streamed == [False]


@pytest.mark.parametrize("root", ["Other", "Training"])
def test_a_wrong_root_is_left_to_the_tree_path(root: str, streamed: list[bool]) -> None:
    data = fla_file(1, 100 * 1024, "records")
    with pytest.raises(XmlRejected, match="root element is 'FLADeclaration'"):
        check_document(data, schema=_STANDIN, root_element=root)
    assert streamed == [False]


def test_identities_in_document_order_at_any_depth(streamed: list[bool], tmp_path: Path) -> None:
    """Nested identities come in the order of their start, as //*[local-name()=...]."""
    xsd = tmp_path / "any.xsd"
    xsd.write_text('<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
                   '<xs:element name="r"><xs:complexType><xs:sequence>'
                   '<xs:any processContents="skip" minOccurs="0" maxOccurs="unbounded"/>'
                   "</xs:sequence></xs:complexType></xs:element></xs:schema>")
    data = (
        b'<r><EmployerId> 1 <!-- a --> 2 </EmployerId><SenderId>s1</SenderId>'
        b"<x><EmployerId>3<?pi x?>4<y>5<EmployerId>6</EmployerId>7</y>8</EmployerId></x>"
        b'<deep><a><b><c xmlns="urn:c"><EmployerId><![CDATA[9<]]></EmployerId></c></b></a>'
        b"</deep><SenderId/><r><SenderId>in an r</SenderId></r></r>"
    )
    for schema in (load_schema(xsd), None):
        checked = assert_same(data, schema=schema, root_element="r")
        assert checked == CheckedDocument("r", ("1  2", "345678", "6", "9<"),
                                          ("s1", "", "in an r"))
    assert streamed == [True, True]


def test_hostile_corpus_gets_the_same_verdicts(streamed: list[bool], tmp_path: Path) -> None:
    files = corpus(tmp_path)
    for name, path in sorted(files.items()):
        for xsd, root in ((_STANDIN, ROOT), (None, None)):
            assert_same(path.read_bytes(), schema=xsd, root_element=root), name
    files["oversize_101mib"].unlink()
    assert True in streamed and False in streamed  # the stream accepted and passed some


@pytest.mark.parametrize(
    "content",
    [
        "<EmployerId><!--c--></EmployerId>",
        "<EmployerId>a<!--c-->bc</EmployerId>",
        "<EmployerId>abc</EmployerId>",
        "<dflt><!--c--></dflt>",
        "<minlen><!--c--></minlen>",
        "<empty> <!--c--> </empty>",
        "<empty>x<?p?>y</empty>",
        "<eo> <!--c--> <SenderId/> <?p?> </eo>",
        "<eo><SenderId>1<!--c-->2</SenderId></eo>",
        "<mixed>x<!--c-->y<c/>z</mixed>",
        "<dec>1<!--c-->.5</dec>",
        "<dec>1.5</dec>",
    ],
)
def test_xsd_content_kinds(content: str, tmp_path: Path, streamed: list[bool]) -> None:
    xsd = tmp_path / "kinds.xsd"
    xsd.write_text(_KINDS_XSD)
    assert_same(f"<r>\n{content}\n</r>".encode(), schema=load_schema(xsd), root_element="r")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=documents())
def test_generated_documents_get_the_same_outcome(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(xmlcheck, "STREAM_BYTES", 0)
        assert_same(data, schema=_STANDIN, root_element=ROOT)
        assert_same(data, schema=None, root_element=None)


@settings(max_examples=300, deadline=None)
@given(data=sample_with_misc())
def test_sample_with_comments_anywhere_gets_the_same_outcome(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(xmlcheck, "STREAM_BYTES", 0)
        assert_same(data, schema=_STANDIN, root_element=ROOT)


_PEAK = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from flad import xmlcheck
from tests.test_xmlcheck_speed import _STANDIN

def high_water_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

data = Path(sys.argv[3]).read_bytes()  # one buffer: no peak of its own to hide under
Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
before = high_water_kib()
if sys.argv[2] == "tree":
    xmlcheck.STREAM_BYTES = 1 << 40
result = xmlcheck.check_document(data, schema=_STANDIN, root_element="FLADeclaration")
print(json.dumps({"grew_mib": (high_water_kib() - before) / 1024, "senders": result.senders}))
"""


def peak_growth(way: str, path: Path) -> float:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(REPO), way, str(path)],
                          capture_output=True, text=True, check=True, timeout=120)
    out = json.loads(done.stdout)
    assert out["senders"] == ["0123456749"]
    return float(out["grew_mib"])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_big_declaration_is_checked_in_bounded_memory(tmp_path: Path) -> None:
    """24 MiB of records: the tree path grows by hundreds of MiB, the stream by little."""
    assert xmlcheck.STREAM_BYTES <= 24 * 1024 * 1024
    path = tmp_path / "records.xml"
    path.write_bytes(fla_file(1, 24 * 1024 * 1024, "records"))
    streamed, tree = peak_growth("stream", path), peak_growth("tree", path)
    assert tree > 100, tree  # the measure can tell the two apart
    assert streamed < 30, streamed


@pytest.mark.parametrize("doc", [
    b'<p:r xmlns:p="urn:p"><p:SenderId>1</p:SenderId><EmployerId>2</EmployerId></p:r>',
    b'<?xml version="1.0"?>\n<!-- c -->\n<r\n a="1"><SenderId>1</SenderId></r>',
    b"<r/>",
])
def test_the_root_is_named_where_the_prolog_ends(doc: bytes, streamed: list[bool]) -> None:
    assert_same(doc, schema=None, root_element="r")
    assert_same(doc, schema=None, root_element=None)
    assert streamed == [True, True]


def test_a_stream_and_tree_checks_share_one_schema_across_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool checks two files at once: a big one streamed (its own validation
    context, no lock) beside small ones validated on their tree (under the lock)."""
    monkeypatch.setattr(xmlcheck, "STREAM_BYTES", 2 * 1024 * 1024)
    big = fla_file(1, 3 * 1024 * 1024, "records")
    bad_big = big.replace(b"<Hours>7.5</Hours>", b"<Hours>x</Hours>", 1)
    small = fla_file(2, 0, "records")
    bad_small = small.replace(b"<Hours>7.5</Hours>", b"<Hours>y</Hours>", 1)
    expected = {
        data: outcome(check_document, data, schema=_STANDIN, root_element=ROOT)
        for data in (big, bad_big, small, bad_small)
    }
    assert isinstance(expected[bad_big], str) and isinstance(expected[bad_small], str)
    wrong: list[str] = []

    def run(files: list[bytes], rounds: int) -> None:
        for _ in range(rounds):
            for data in files:
                got = outcome(check_document, data, schema=_STANDIN, root_element=ROOT)
                if got != expected[data]:
                    wrong.append(f"{got!r} != {expected[data]!r}")

    threads = [threading.Thread(target=run, args=([big, bad_big], 3)),
               threading.Thread(target=run, args=([small, bad_small], 150))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not wrong, wrong[:3]
