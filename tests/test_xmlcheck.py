"""flad.xmlcheck: hostile input is refused fast with one clear line; good files pass."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from flad import xmlcheck
from flad.xmlcheck import (
    DEFAULT_MAX_FILE_BYTES,
    CheckedDocument,
    XmlRejected,
    check_document,
    check_xpath,
    load_schema,
    parse_hardened,
)
from tests.hostile import (
    ACCEPTED,
    CANARY_TEXT,
    EXPECTED_REASONS,
    FileOpenWatch,
    canary_path,
    corpus,
    sample_bytes,
)

DATA = Path(xmlcheck.__file__).parent / "data"
STANDIN_XSD = DATA / "standin-fla.xsd"
SAFETY_BOUND_SECONDS = 1.0  # a safety bound for hostile input, not a speed benchmark
ENTITY_ATTACKS = (
    "xxe_file_passwd",
    "xxe_file_canary",
    "xxe_http",
    "external_dtd_http",
    "parameter_entities",
    "billion_laughs",
    "quadratic_blowup",
    "doctype_no_entities",
)


class Listener:
    """A local TCP socket the network attacks point at; it must never see a connection."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/x"

    def connections(self) -> int:
        """How many connections arrived since the last call (the kernel queues them)."""
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    it = Listener()
    yield it
    it.sock.close()


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def hostile(hostile_dir: Path, listener: Listener) -> Iterator[dict[str, Path]]:
    files = corpus(hostile_dir, http_url=listener.url)
    yield files
    files["oversize_101mib"].unlink()  # pytest keeps old temp dirs: do not keep 101 MiB


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return load_schema(STANDIN_XSD)


def _timed_check(
    run: Callable[[], object], canary: Path, listener: Listener
) -> tuple[object, float, bool]:
    """Run one check; return (result or XmlRejected, seconds, canary opened?)."""
    listener.connections()
    try:
        watch: FileOpenWatch | None = FileOpenWatch(canary).__enter__()
    except OSError:
        watch = None
    started = time.monotonic()
    try:
        outcome: object = run()
    except XmlRejected as exc:
        outcome = exc
    elapsed = time.monotonic() - started
    opened = False
    if watch is not None:
        opened = watch.opened
        watch.__exit__(None, None, None)
    assert listener.connections() == 0, "the check opened a network connection"
    return outcome, elapsed, opened


def _assert_one_line(reason: str) -> None:
    assert reason
    assert reason == " ".join(reason.split()), f"not one clean line: {reason!r}"
    assert reason.isprintable()


# --- the hostile corpus ------------------------------------------------------------------


def test_corpus_covers_every_case(hostile: dict[str, Path]) -> None:
    assert set(hostile) == set(EXPECTED_REASONS) | ACCEPTED
    assert hostile["oversize_101mib"].stat().st_size == 101 * 1024 * 1024


def test_corpus_has_teeth(hostile: dict[str, Path]) -> None:
    """A naive parser does read the canary: the refusals below are not vacuous."""
    naive = etree.XMLParser(resolve_entities=True, load_dtd=True, no_network=True)
    for name in ("xxe_file_canary", "utf7_hidden_doctype"):
        root = etree.fromstring(hostile[name].read_bytes(), naive)
        assert CANARY_TEXT in etree.tostring(root, encoding="unicode"), name


@pytest.mark.parametrize("name", sorted(set(EXPECTED_REASONS) | ACCEPTED))
def test_hostile_file_is_refused_fast_with_its_reason(
    name: str,
    hostile: dict[str, Path],
    hostile_dir: Path,
    schema: etree.XMLSchema,
    listener: Listener,
) -> None:
    data = hostile[name].read_bytes()
    outcome, elapsed, opened = _timed_check(
        lambda: check_document(data, schema=schema, root_element="FLADeclaration"),
        canary_path(hostile_dir),
        listener,
    )
    assert elapsed < SAFETY_BOUND_SECONDS, f"{name} took {elapsed:.2f}s"
    assert not opened, f"{name}: the canary file was opened"
    if name in ACCEPTED:
        assert outcome == CheckedDocument("FLADeclaration", ("0123456749",), ("0123456749",))
        return
    assert isinstance(outcome, XmlRejected), f"{name} was accepted"
    reason = str(outcome)
    _assert_one_line(reason)
    assert EXPECTED_REASONS[name] in reason
    assert CANARY_TEXT not in reason
    assert "root:" not in reason  # nothing from /etc/passwd either


@pytest.mark.parametrize("name", ENTITY_ATTACKS)
def test_parser_itself_is_safe_without_the_prolog_scan(
    name: str,
    hostile: dict[str, Path],
    hostile_dir: Path,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defence in depth: with the DOCTYPE pre-scan switched off, the hardened parser
    still loads nothing, expands nothing, and the tree check still refuses the file."""
    monkeypatch.setattr(xmlcheck, "_scan_prolog", lambda data, start: start)
    data = hostile[name].read_bytes()
    outcome, elapsed, opened = _timed_check(
        lambda: parse_hardened(data), canary_path(hostile_dir), listener
    )
    assert elapsed < SAFETY_BOUND_SECONDS
    assert not opened
    assert isinstance(outcome, XmlRejected)
    assert CANARY_TEXT not in str(outcome)
    _assert_one_line(str(outcome))


def test_utf7_doctype_is_caught_by_the_tree_check_too(
    hostile: dict[str, Path],
    hostile_dir: Path,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A byte scan cannot see a UTF-7 DOCTYPE: the encoding gate and the tree check can."""
    monkeypatch.setattr(xmlcheck, "_refuse_bad_encoding", lambda data: 0)
    data = hostile["utf7_hidden_doctype"].read_bytes()
    outcome, _, opened = _timed_check(
        lambda: parse_hardened(data), canary_path(hostile_dir), listener
    )
    assert not opened
    assert isinstance(outcome, XmlRejected)
    assert "declares a DOCTYPE" in str(outcome)


def test_not_well_formed_says_line_and_column() -> None:
    data = b"<a>\n  <b>\n    <c></b>\n</a>\n"
    with pytest.raises(XmlRejected) as info:
        parse_hardened(data)
    assert str(info.value).startswith("the file is not well-formed XML: line 3, column ")
    assert "</b> closes <c>, which was opened on the same line" in str(info.value)


def test_size_limit_is_checked_before_parsing() -> None:
    data = b"<a>" + b" " * 100 + b"</a>"
    assert parse_hardened(data, max_bytes=len(data)).getroot().tag == "a"
    with pytest.raises(XmlRejected) as info:
        parse_hardened(b"\x00" + data, max_bytes=len(data))  # NUL would say otherwise
    assert str(info.value) == (
        f"file is {len(data) + 1} bytes, larger than the limit of {len(data)} bytes"
    )
    assert DEFAULT_MAX_FILE_BYTES == 104857600


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"   \n ", "only whitespace"),
        (b"hello", "does not start with '<'"),
        (b"\xff\xfe<\x00a\x00/\x00>\x00", "UTF-16"),
        (b"<\x00a\x00/\x00>\x00", "UTF-16 or UTF-32"),
        (b'<?xml version="1.0" encoding="UTF-16"?><a/>', "'UTF-16'"),
        (b'<?xml version="1.0" encoding="EBCDIC-US"?><a/>', "'EBCDIC-US'"),
        (b'\xef\xbb\xbf<?xml version="1.0" encoding="ISO-8859-1"?><a/>', "byte-order mark"),
        (b"<a>\xed\xa0\x80</a>", "not valid UTF-8: byte 0xED at line 1, column 4"),
        (b"<a>\x01</a>", "invalid Char value 1"),
        (b"<a>&foo;</a>", "Entity 'foo' not defined"),
        (b"<!-- c --><!DOCTYPE a><a/>", "declares a DOCTYPE"),
    ],
)
def test_odd_bytes_get_a_clear_reason(data: bytes, fragment: str) -> None:
    with pytest.raises(XmlRejected) as info:
        parse_hardened(data)
    _assert_one_line(str(info.value))
    assert fragment in str(info.value)


def test_declared_single_byte_encodings_and_bom_are_accepted() -> None:
    latin1 = '<?xml version="1.0" encoding="ISO-8859-1"?><a>Liège</a>'.encode("latin-1")
    assert parse_hardened(latin1).getroot().text == "Liège"
    bom = b"\xef\xbb\xbf" + "<a>Liège</a>".encode()
    assert parse_hardened(bom).getroot().text == "Liège"
    comment = b"<!-- <!DOCTYPE x [<!ENTITY y 'z'>]> --><a/>"  # text in a comment is fine
    assert parse_hardened(comment).getroot().tag == "a"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_get_one_line(data: bytes) -> None:
    try:
        parse_hardened(data)
    except XmlRejected as exc:
        _assert_one_line(str(exc))


@given(st.text())
def test_reason_is_always_one_printable_line(text: str) -> None:
    reason = str(XmlRejected(text))
    assert "\n" not in reason and "\r" not in reason
    assert reason.isprintable()
    assert reason == XmlRejected(text).reason


def test_multi_line_lxml_message_is_flattened() -> None:
    assert str(XmlRejected("first\nsecond\r\n\tthird\u2028fourth")) == "first second third fourth"


# --- XSD ---------------------------------------------------------------------------------


def _sample_with(old: str, new: str, count: int = 1) -> bytes:
    text = sample_bytes().decode()
    assert old in text
    return text.replace(old, new, count).encode()


def test_the_sample_validates_against_the_standin(schema: etree.XMLSchema) -> None:
    checked = check_document(sample_bytes(), schema=schema, root_element="FLADeclaration")
    assert checked == CheckedDocument("FLADeclaration", ("0123456749",), ("0123456749",))


def test_standin_says_it_is_a_standin() -> None:
    doc = etree.parse(str(STANDIN_XSD))
    xs = "{http://www.w3.org/2001/XMLSchema}"
    annotation = doc.getroot().find(f"{xs}annotation")
    assert annotation is not None
    notes = " ".join(str(text) for text in annotation.itertext())
    assert "STAND-IN" in notes and "NOT the official FLA schema" in notes


def test_xsd_errors_carry_line_numbers_on_one_line(schema: etree.XMLSchema) -> None:
    data = _sample_with("85073003328", "123")
    data = data.replace(b"<Hours>7.5</Hours>", b"<Hours>seven</Hours>")
    with pytest.raises(XmlRejected) as info:
        check_document(data, schema=schema, root_element="FLADeclaration")
    reason = str(info.value)
    _assert_one_line(reason)
    assert reason.startswith("the file does not follow the XSD: line 7: Element 'WorkerINSS': ")
    assert "; line 9: Element 'Hours': 'seven' is not a valid value" in reason
    assert "{urn:" not in reason


def test_xsd_errors_beyond_the_first_few_are_counted(schema: etree.XMLSchema) -> None:
    data = sample_bytes().replace(b"<Hours>7.5</Hours>", b"<Hours>x</Hours>")
    data = data.replace(b"<Hours>3.25</Hours>", b"<Hours>x</Hours>")
    data = data.replace(b"<TrainingDate>2026-03-16", b"<TrainingDate>2026-02-30")
    data = data.replace(b"<TrainingDate>2026-03-17", b"<TrainingDate>tomorrow")
    with pytest.raises(XmlRejected) as info:
        check_document(data, schema=schema, root_element=None)
    reason = str(info.value)
    assert reason.count("line ") == 3
    assert reason.endswith("; and 1 more error")


def test_missing_element_is_named(schema: etree.XMLSchema) -> None:
    data = _sample_with("  <EmployerId>0123456749</EmployerId>\n", "")
    with pytest.raises(XmlRejected) as info:
        check_document(data, schema=schema, root_element="FLADeclaration")
    assert (
        "line 5: Element 'Training': This element is not expected. Expected is ( EmployerId )"
        in str(info.value)
    )


# --- root element --------------------------------------------------------------------------


def test_root_element_mismatch() -> None:
    with pytest.raises(XmlRejected) as info:
        check_document(b"<Foo/>", schema=None, root_element="FLARequest")
    assert str(info.value) == "root element is 'Foo', expected 'FLARequest'"


def test_root_element_is_compared_by_local_name(schema: etree.XMLSchema) -> None:
    data = b'<x:Foo xmlns:x="urn:any"/>'
    assert check_document(data, schema=None, root_element="Foo").root_tag == "Foo"
    with pytest.raises(XmlRejected, match="root element is 'FLADeclaration', expected 'Other'"):
        check_document(sample_bytes(), schema=schema, root_element="Other")
    # the root check comes before the XSD, whose message would be vaguer
    with pytest.raises(XmlRejected, match=r"^root element is 'Foo'"):
        check_document(data, schema=schema, root_element="FLADeclaration")


# --- identities by XPath ---------------------------------------------------------------------


def test_defaults_find_identities_with_a_prefixed_namespace() -> None:
    data = (
        b'<f:FLADeclaration xmlns:f="urn:flad:standin:fla:1">'
        b"<f:SenderId> 0123456749\n</f:SenderId><f:EmployerId>0403170701</f:EmployerId>"
        b"</f:FLADeclaration>"
    )
    checked = check_document(data, schema=None, root_element="FLADeclaration")
    assert checked == CheckedDocument("FLADeclaration", ("0403170701",), ("0123456749",))


def test_defaults_find_identities_in_a_default_namespace() -> None:
    data = (
        b'<Batch xmlns="urn:other"><Decl><EmployerId>0403170701</EmployerId></Decl>'
        b"<Decl><EmployerId>0123456749</EmployerId></Decl></Batch>"
    )
    checked = check_document(data, schema=None, root_element=None)
    assert checked.root_tag == "Batch"
    assert checked.employers == ("0403170701", "0123456749")  # document order
    assert checked.senders == ()


@pytest.mark.parametrize(
    ("xpath", "expected"),
    [
        ("//*[local-name()='Employer']/@number", ("0403170701",)),
        ("//*[local-name()='EmployerId']/text()", ("0123456749",)),
        ("string(//*[local-name()='EmployerId'])", ("0123456749",)),
        ("string(//*[local-name()='Nothing'])", ()),
        ("//*[local-name()='Nothing']", ()),
        ("//*[local-name()='Empty']", ("",)),
        ("//*[local-name()='Mixed']", ("0123 456749",)),
    ],
)
def test_custom_xpaths(xpath: str, expected: tuple[str, ...]) -> None:
    data = (
        b'<r xmlns="urn:x"><Employer number=" 0403170701 "/>'
        b"<EmployerId>0123456749</EmployerId><Empty/>"
        b"<Mixed> 0123<!-- note --> <b>456749</b> </Mixed></r>"
    )
    assert check_xpath(xpath) is None
    checked = check_document(data, schema=None, root_element=None, employer_xpath=xpath)
    assert checked.employers == expected


@pytest.mark.parametrize(
    ("xpath", "fragment"),
    [
        ("count(//*)", "gives a number"),
        ("boolean(//*)", "gives a boolean"),
        ("//comment()", "selects a comment"),
        ("//processing-instruction()", "selects a processing instruction"),
        ("//namespace::*", "selects a namespace node"),
    ],
)
def test_xpath_giving_no_text_is_a_configuration_error(xpath: str, fragment: str) -> None:
    data = b'<?xml version="1.0"?><r xmlns:p="urn:p"><!-- c --><?pi x?></r>'
    with pytest.raises(XmlRejected) as info:
        check_document(data, schema=None, root_element=None, sender_xpath=xpath)
    reason = str(info.value)
    _assert_one_line(reason)
    assert fragment in reason and "sender XPath" in reason and "configuration" in reason


def test_check_xpath() -> None:
    assert check_xpath(xmlcheck.DEFAULT_EMPLOYER_XPATH) is None
    assert check_xpath(xmlcheck.DEFAULT_SENDER_XPATH) is None
    unclosed = check_xpath("//*[local-name()='EmployerId'")
    assert unclosed is not None and unclosed.startswith("invalid XPath: Invalid ")
    assert check_xpath("") == "the XPath is empty"
    assert check_xpath("$employer") == "invalid XPath: Undefined variable"
    assert check_xpath("nosuch(//x)") == "invalid XPath: Unregistered function"
    assert check_xpath("count(//x)") == "the XPath gives a number, not elements or text"
    assert check_xpath("//comment()") == (
        "the XPath selects a comment, not an element, attribute or text"
    )
    assert check_xpath("//namespace::*") is not None
    prefixed = check_xpath("//fla:EmployerId")
    assert prefixed is not None and "local-name()" in prefixed


# --- load_schema -------------------------------------------------------------------------------


def test_load_schema_names_the_path_of_a_bad_xsd(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xsd"
    with pytest.raises(ValueError, match=f"cannot read the XSD {re.escape(str(missing))}") as info:
        load_schema(missing)
    assert isinstance(info.value, XmlRejected)  # callers may catch either kind
    not_xml = tmp_path / "broken.xsd"
    not_xml.write_text("<xs:schema")
    with pytest.raises(
        ValueError, match=f"the XSD {re.escape(str(not_xml))} cannot be used"
    ) as info:
        load_schema(not_xml)
    _assert_one_line(str(info.value))
    not_xsd = tmp_path / "plain.xsd"
    not_xsd.write_text("<hello/>")
    with pytest.raises(ValueError, match=f"the XSD {re.escape(str(not_xsd))} cannot be used"):
        load_schema(str(not_xsd))


def test_load_schema_follows_local_includes(tmp_path: Path) -> None:
    xs = 'xmlns:xs="http://www.w3.org/2001/XMLSchema"'
    (tmp_path / "types.xsd").write_text(
        f'<xs:schema {xs}><xs:simpleType name="Ten"><xs:restriction base="xs:string">'
        '<xs:pattern value="[0-9]{10}"/></xs:restriction></xs:simpleType></xs:schema>'
    )
    (tmp_path / "main.xsd").write_text(
        f'<xs:schema {xs}><xs:include schemaLocation="types.xsd"/>'
        '<xs:element name="EmployerId" type="Ten"/></xs:schema>'
    )
    schema = load_schema(tmp_path / "main.xsd")
    assert check_document(b"<EmployerId>0123456749</EmployerId>", schema=schema, root_element=None)
    with pytest.raises(XmlRejected, match="line 1: Element 'EmployerId'"):
        check_document(b"<EmployerId>12</EmployerId>", schema=schema, root_element=None)


def test_load_schema_never_uses_the_network(tmp_path: Path, listener: Listener) -> None:
    xs = 'xmlns:xs="http://www.w3.org/2001/XMLSchema"'
    hint = tmp_path / "hint.xsd"  # an import that is only a hint: loads without it
    hint.write_text(
        f'<xs:schema {xs}><xs:import namespace="urn:b" schemaLocation="{listener.url}.xsd"/>'
        '<xs:element name="a" type="xs:string"/></xs:schema>'
    )
    needed = tmp_path / "needed.xsd"  # an import that is really needed: a clear refusal
    needed.write_text(
        f'<xs:schema {xs} xmlns:b="urn:b">'
        f'<xs:import namespace="urn:b" schemaLocation="{listener.url}.xsd"/>'
        '<xs:element name="a" type="b:T"/></xs:schema>'
    )
    listener.connections()
    load_schema(hint)
    with pytest.raises(ValueError, match="does not fetch schemas from the network"):
        load_schema(needed)
    assert listener.connections() == 0
