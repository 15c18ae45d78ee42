"""flad.xmlcheck's shortcuts for big files give exactly the verdicts of the plain path.

check_document parses without comments and PIs and finds the default identities with
one tree walk instead of two XPath runs. These tests compare it, file by file, with
the plain path (``reference_check``: a comment-keeping parse, then every identity by
etree.XPath, which is how check_document worked before) on the hostile corpus, the
samples, the benchmark's files and generated documents: same CheckedDocument, or the
same reason word for word.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from flad import xmlcheck
from flad.xmlcheck import (
    DEFAULT_EMPLOYER_XPATH,
    DEFAULT_SENDER_XPATH,
    CheckedDocument,
    XmlRejected,
    check_document,
    load_schema,
    parse_hardened,
)
from tests.harness import sample
from tests.hostile import corpus, sample_bytes

STANDIN_XSD = Path(xmlcheck.__file__).parent / "data" / "standin-fla.xsd"
_STANDIN = load_schema(STANDIN_XSD)  # module level: hypothesis tests take no fixtures
ROOT = "FLADeclaration"
Outcome = CheckedDocument | str

# bench/run.py's `records` content (bench/ is not importable from here): many records.
_RECORD = (
    b"  <Training>\n    <WorkerINSS>85073003328</WorkerINSS>\n"
    b"    <TrainingDate>2026-03-16</TrainingDate>\n    <Hours>7.5</Hours>\n"
    b"  </Training>\n"
)


def fla_file(n: int, size: int, content: str) -> bytes:
    """A valid stand-in FLA file of about `size` bytes, as bench/run.py makes them."""
    if content == "padded":
        return sample(n, size)
    head, _, tail = sample(n).partition(b"</FLADeclaration>")
    records = max(0, (size - len(head) - len(tail) - 20) // len(_RECORD))
    return head + _RECORD * records + b"</FLADeclaration>" + tail


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return _STANDIN


def reference_check(
    data: bytes,
    *,
    schema: etree.XMLSchema | None,
    root_element: str | None,
    employer_xpath: str = DEFAULT_EMPLOYER_XPATH,
    sender_xpath: str = DEFAULT_SENDER_XPATH,
) -> CheckedDocument:
    """check_document the plain way: comments kept, every identity by etree.XPath."""
    tree = parse_hardened(data)
    root_tag = etree.QName(tree.getroot()).localname
    if root_element is not None and root_tag != root_element:
        raise XmlRejected(f"root element is {root_tag!r}, expected {root_element!r}")
    if schema is not None:
        with xmlcheck._SCHEMA_LOCK:
            reason = None if schema.validate(tree) else xmlcheck._schema_reason(schema)
        if reason is not None:
            raise XmlRejected(reason)
    return CheckedDocument(
        root_tag=root_tag,
        employers=xmlcheck._xpath_values(tree, employer_xpath, "employer"),
        senders=xmlcheck._xpath_values(tree, sender_xpath, "sender"),
    )


def outcome(check: Any, data: bytes, **kwargs: Any) -> Outcome:
    """The CheckedDocument, or the reason of the XmlRejected."""
    try:
        result = check(data, **kwargs)
    except XmlRejected as exc:
        return str(exc)
    assert isinstance(result, CheckedDocument)
    return result


def assert_same(data: bytes, **kwargs: Any) -> Outcome:
    """check_document and the plain path agree on this file; returns the outcome."""
    fast = outcome(check_document, data, **kwargs)
    assert fast == outcome(reference_check, data, **kwargs)
    return fast


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """The keep_comments of every parser check_document makes, in order."""
    seen: list[bool] = []
    real = xmlcheck._new_parser

    def spy(*, keep_comments: bool = True) -> etree.XMLParser:
        seen.append(keep_comments)
        return real(keep_comments=keep_comments)

    monkeypatch.setattr(xmlcheck, "_new_parser", spy)
    yield seen


# --- the corpus ----------------------------------------------------------------------------


def test_hostile_corpus_gets_the_same_verdicts(tmp_path: Path, schema: etree.XMLSchema) -> None:
    files = corpus(tmp_path)
    for name, path in sorted(files.items()):
        data = path.read_bytes()
        for xsd in (schema, None):
            assert_same(data, schema=xsd, root_element=ROOT), name
    files["oversize_101mib"].unlink()


@pytest.mark.parametrize("content", ["padded", "records"])
@pytest.mark.parametrize("size", [0, 20 * 1024, 300 * 1024])
def test_bench_files_get_the_same_values(content: str, size: int, schema: etree.XMLSchema) -> None:
    data = fla_file(3, size, content)
    expected = CheckedDocument(ROOT, ("0123456749",), ("0123456749",))
    assert assert_same(data, schema=schema, root_element=ROOT) == expected
    assert assert_same(data, schema=None, root_element=None) == expected


def test_identities_at_any_depth_in_any_namespace() -> None:
    data = (
        b'<?xml version="1.0"?><!-- prolog --><r xmlns="urn:d" xmlns:p="urn:p">'
        b"<EmployerId> 1 <!-- a --> 2 </EmployerId>"
        b"<p:SenderId>s1</p:SenderId>"
        b"<x><p:EmployerId>3<?pi x?>4<y>5<EmployerId>6</EmployerId>7</y>8</p:EmployerId></x>"
        b'<deep><a><b><c xmlns=""><EmployerId><![CDATA[9<]]></EmployerId></c></b></a></deep>'
        b"<SenderId/><employerid>no</employerid><EmployerIdX>no</EmployerIdX>"
        b"<x><SenderId>s2<!--c--></SenderId></x></r><!-- epilog --><?pi end?>"
    )
    checked = assert_same(data, schema=None, root_element=None)
    assert checked == CheckedDocument("r", ("1  2", "345678", "6", "9<"), ("s1", "", "s2"))


@pytest.mark.parametrize(
    ("employer", "sender"),
    [
        (DEFAULT_EMPLOYER_XPATH, "//*[local-name()='Sender']/@id"),
        ("//*[local-name()='EmployerId']/text()", DEFAULT_SENDER_XPATH),  # sees the split
        (DEFAULT_EMPLOYER_XPATH, "//*[local-name()='EmployerId']//node()"),  # a comment
        (DEFAULT_EMPLOYER_XPATH, "//*[local-name()='EmployerId']//."),  # a comment too
        ("//*[local-name()='x']//following-sibling::*", DEFAULT_SENDER_XPATH),
        (DEFAULT_SENDER_XPATH, DEFAULT_EMPLOYER_XPATH),  # swapped: still by name
        (DEFAULT_EMPLOYER_XPATH, DEFAULT_EMPLOYER_XPATH),
    ],
)
def test_custom_xpaths_see_the_comments_they_always_saw(employer: str, sender: str) -> None:
    """A configured XPath may see comments (or the text nodes they split): the file
    is then parsed with them, and its outcome is the plain path's."""
    for data in (
        b"<r><EmployerId>1<!--c-->2</EmployerId><Sender id=' 2 '/><SenderId>3</SenderId></r>",
        b"<r><x><!--c--><EmployerId>1</EmployerId></x><x><?p?><SenderId>2</SenderId></x></r>",
        b"<r><EmployerId>12</EmployerId><Sender id='3'/><SenderId>4</SenderId></r>",
    ):
        assert_same(
            data,
            schema=None,
            root_element=None,
            employer_xpath=employer,
            sender_xpath=sender,
        )


def test_text_split_by_comments_keeps_its_verdict() -> None:
    """Without comments the pieces become one text node, over libxml2's 10 MB limit;
    the file passes the plain path, so it must pass check_document too."""
    piece = b"1" * 6_000_000
    for misc in (b"<!-- c -->", b"<?pi x?>"):
        data = b"<r><EmployerId>" + piece + misc + piece + b"</EmployerId></r>"
        checked = assert_same(data, schema=None, root_element=None)
        assert isinstance(checked, CheckedDocument)
        assert checked.employers == (piece.decode() * 2,)


def test_xsd_reason_counts_every_piece_of_split_text(schema: etree.XMLSchema) -> None:
    """libxml2 reports text in element-only content once per text node: the reason
    must count them as the plain path does, comments and all."""
    data = sample_bytes().replace(b"<Training>", b"<Training>x<!--c-->y<?p?>z", 1)
    reason = assert_same(data, schema=schema, root_element=ROOT)
    assert isinstance(reason, str) and reason.count("Character content") == 3


def test_comments_are_dropped_only_when_nothing_can_see_them(
    parses: list[bool], schema: etree.XMLSchema
) -> None:
    padded = sample(1, 50_000)
    check_document(padded, schema=schema, root_element=ROOT)
    assert parses == [False]

    parses.clear()
    custom = "//*[local-name()='EmployerId']/text()"
    check_document(padded, schema=schema, root_element=ROOT, employer_xpath=custom)
    assert parses == [True]

    parses.clear()  # a rejection, with comments after the prolog: decided again with them
    with pytest.raises(XmlRejected, match="root element"):
        check_document(padded, schema=schema, root_element="Other")
    assert parses == [False, True]

    parses.clear()  # a rejection, with comments only in the prolog: the same tree anyway
    with pytest.raises(XmlRejected, match="does not follow the XSD"):
        check_document(sample_bytes().replace(b"7.5", b"x"), schema=schema, root_element=ROOT)
    assert parses == [False]


def test_default_identities_run_no_xpath(
    monkeypatch: pytest.MonkeyPatch, schema: etree.XMLSchema
) -> None:
    def no_xpath(*args: object, **kwargs: object) -> None:
        raise AssertionError("etree.XPath used for a default identity XPath")

    monkeypatch.setattr(xmlcheck.etree, "XPath", no_xpath)
    checked = check_document(fla_file(1, 100_000, "records"), schema=schema, root_element=ROOT)
    assert checked.employers == checked.senders == ("0123456749",)


def test_doctype_is_still_refused_by_the_tree_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth holds on the comment-free parse too."""
    monkeypatch.setattr(xmlcheck, "_scan_prolog", lambda data, start: start)
    data = b'<!DOCTYPE r [<!ENTITY e "x">]><r><EmployerId>&e;</EmployerId></r>'
    with pytest.raises(XmlRejected, match="declares a DOCTYPE"):
        check_document(data, schema=None, root_element=None)


# --- generated documents -------------------------------------------------------------------

_MISC = st.sampled_from(["<!-- c -->", "<!---->", "<?pi x?>", "<?pi?>", "<![CDATA[ 4<5 ]]>"])
_TEXT = st.text(alphabet=" \n\t0123456789abé&<", max_size=6).map(escape)
_NAMES = st.sampled_from(["EmployerId", "SenderId", "Training", "Hours", "employerid"])
_PREFIXES = st.sampled_from(["", "", "p:", "f:"])


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def build(prefix: str, name: str, kids: list[str]) -> str:
        return f"<{prefix}{name}>{''.join(kids)}</{prefix}{name}>"

    return st.builds(build, _PREFIXES, _NAMES, st.lists(children, max_size=4))


_NODES = st.recursive(st.one_of(_TEXT, _MISC), _element, max_leaves=20)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """Small documents, namespaced or not, with identities at any depth, text split by
    comments, PIs and CDATA, and misc in the prolog and the epilog."""
    xmlns = draw(st.sampled_from(["", ' xmlns="urn:flad:standin:fla:1"', ' xmlns="urn:x"']))
    prolog = draw(st.sampled_from(["", '<?xml version="1.0"?>\n', "<!-- p -->", "<?p?>"]))
    epilog = draw(st.sampled_from(["", "<!-- e -->", "<?pi e?>\n", " "]))
    kids = "".join(draw(st.lists(_NODES, max_size=5)))
    root = f'<{ROOT}{xmlns} xmlns:p="urn:p" xmlns:f="urn:flad:standin:fla:1">{kids}</{ROOT}>'
    return (prolog + root + epilog).encode()


@st.composite
def sample_with_misc(draw: st.DrawFn) -> bytes:
    """The valid sample with comments, PIs or stray text put anywhere outside markup:
    mostly still valid (a comment inside <Hours>), sometimes not (text in <Training>)."""
    text = sample_bytes().decode()
    outside = [i for i in range(text.index("?>") + 2, len(text) + 1) if _outside_markup(text, i)]
    inserts = draw(
        st.lists(
            st.tuples(st.sampled_from(outside), st.one_of(_MISC, st.sampled_from(["x", " "]))),
            max_size=5,
        )
    )
    for at, what in sorted(inserts, reverse=True):
        text = text[:at] + what + text[at:]
    return text.encode()


def _outside_markup(text: str, at: int) -> bool:
    """Whether position `at` is between markup (not inside a tag or a comment)."""
    return text.rfind("<", 0, at) <= text.rfind(">", 0, at)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=documents())
def test_generated_documents_get_the_same_outcome(data: bytes) -> None:
    assert_same(data, schema=None, root_element=None)
    assert_same(data, schema=_STANDIN, root_element=ROOT)


@settings(max_examples=300, deadline=None)
@given(data=sample_with_misc())
def test_sample_with_comments_anywhere_gets_the_same_outcome(data: bytes) -> None:
    assert_same(data, schema=_STANDIN, root_element=ROOT)


# An XSD with every content kind whose check libxml2 runs per text node or on the
# whole value: fixed and default values, empty content, nil, element-only, mixed,
# simple types. Comments and PIs inside them must not change a verdict or a reason.
_KINDS_XSD = """<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
<xs:element name="r"><xs:complexType><xs:sequence>
 <xs:element name="EmployerId" type="xs:string" fixed="abc" minOccurs="0"/>
 <xs:element name="dflt" type="xs:string" default="abc" minOccurs="0"/>
 <xs:element name="minlen" minOccurs="0"><xs:simpleType><xs:restriction base="xs:string">
  <xs:minLength value="1"/></xs:restriction></xs:simpleType></xs:element>
 <xs:element name="empty" minOccurs="0"><xs:complexType/></xs:element>
 <xs:element name="nil" type="xs:string" nillable="true" minOccurs="0"/>
 <xs:element name="eo" minOccurs="0"><xs:complexType><xs:sequence>
  <xs:element name="SenderId" type="xs:string" minOccurs="0" maxOccurs="3"/>
 </xs:sequence></xs:complexType></xs:element>
 <xs:element name="mixed" minOccurs="0"><xs:complexType mixed="true"><xs:sequence>
  <xs:element name="c" type="xs:string" minOccurs="0" maxOccurs="3"/>
 </xs:sequence></xs:complexType></xs:element>
 <xs:element name="dec" type="xs:decimal" minOccurs="0"/>
</xs:sequence></xs:complexType></xs:element></xs:schema>"""
_XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


@pytest.mark.parametrize(
    "content",
    [
        "<EmployerId><!--c--></EmployerId>",
        "<EmployerId>a<!--c-->bc</EmployerId>",
        "<EmployerId>ab<?p?></EmployerId>",
        "<dflt><!--c--></dflt>",
        "<minlen><!--c--></minlen>",
        "<minlen> <!--c--></minlen>",
        "<empty><!--c--></empty>",
        "<empty> <!--c--> </empty>",
        "<empty>x<?p?>y</empty>",
        f"<nil {_XSI} xsi:nil='true'><!--c--></nil>",
        f"<nil {_XSI} xsi:nil='true'> <!--c--> </nil>",
        "<eo>x<!--c-->y<SenderId>1<!--c-->2</SenderId>z</eo>",
        "<eo> <!--c--> <SenderId/> <?p?> </eo>",
        "<mixed>x<!--c-->y<c/>z</mixed>",
        "<dec>1<!--c-->.5</dec>",
        "<dec>1<!--c--> .5</dec>",
    ],
)
def test_xsd_content_kinds_with_comments(content: str, tmp_path: Path) -> None:
    xsd = tmp_path / "kinds.xsd"
    xsd.write_text(_KINDS_XSD)
    data = f"<r>\n{content}\n</r>".encode()
    assert_same(data, schema=load_schema(xsd), root_element="r")


# --- the encoding check --------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=40),
        st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    ),
    chunk=st.integers(min_value=1, max_value=5),
)
def test_utf8_check_in_slices_agrees_with_decode(data: bytes, chunk: int) -> None:
    try:
        data.decode("utf-8")
        expected = True
    except UnicodeDecodeError:
        expected = False
    with mock.patch.object(xmlcheck, "_UTF8_CHUNK", chunk):
        assert xmlcheck._is_utf8(data) is expected


def test_utf8_check_holds_a_slice_not_the_file() -> None:
    data = "<a>" + "Liège €𝄞 " * 700_000 + "</a>"  # 10 MiB of UTF-8, 4 bytes a char as a str
    raw = data.encode()
    tracemalloc.start()
    try:
        assert xmlcheck._is_utf8(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * xmlcheck._UTF8_CHUNK < len(raw)
    bad = raw[:-4] + b"\xed\xa0\x80" + raw[-4:]  # a surrogate, just before </a>
    assert not xmlcheck._is_utf8(bad)
    column = len(data) - 3
    with pytest.raises(
        XmlRejected, match=f"not valid UTF-8: byte 0xED at line 1, column {column};"
    ):
        parse_hardened(bad)
