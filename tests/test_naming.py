"""The file-name grammar: DOMAIN.md examples, every refusal, and generated names."""

from __future__ import annotations

import datetime
import re
import string

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from flad.naming import (
    ENVIRONMENTS,
    FILE_TYPES,
    SEQUENCE_CAPACITY,
    FileName,
    InvalidName,
    SubmissionNames,
    format_name,
    pad_sender,
    parse,
    sequence_for,
    sequence_index,
    submission_names,
)

D = datetime.date(2007, 4, 23)
FI_4_1 = "FI.DMFA.006400.20070423.00001.R.4.1"
GO_4 = "GO.DMFA.006400.20070423.00001.R.4"


# --- examples from DOMAIN.md -------------------------------------------------------


def test_parse_split_data_file() -> None:
    name = parse(FI_4_1)
    assert name == FileName("FI", "DMFA", "006400", D, "00001", "R", 4, 1)
    assert str(name) == FI_4_1
    assert name.set_key == "DMFA.006400.20070423.00001.R"


def test_parse_go_names_number_of_parts() -> None:
    name = parse(GO_4)
    assert name == FileName("GO", "DMFA", "006400", D, "00001", "R", 4)
    assert name.part is None
    assert str(name) == GO_4


@pytest.mark.parametrize(
    "text",
    [
        "FO.ACRF.999999.20260731.00001.T",
        "FS.ACRF.999999.20260731.00001.T",
        "GO.ACRF.999999.20260731.00001.T",
        "FO.NOTI.999999.20260731.00001.T",
        "CO.NOTI.999999.20260731.00001.R",
        "GO.XXXX.123456.20260731.00001.T.1",
        "FI.ACRF.006400.20260731.00001.T.1.1",
        "TD.DMFA.006400.20070423.00001.R.4",
        "TD.DMFA.006400.20070423.00001.R",
        "FI.DMFA.006400.20070423.00001.S.1.1",
        "FI.DMFA.006400.20070423.00001.R",
        "FI.DMFA.006400.20070423.A0Z9Q.R.9.9",
        "FI.DM2A.000000.00010101.ZZZZZ.T.1.1",
    ],
)
def test_valid_names_round_trip(text: str) -> None:
    assert str(parse(text)) == text


def test_reply_set_key_matches_across_types() -> None:
    names = [parse(f"{t}.ACRF.999999.20260731.00001.T") for t in ("FO", "FS", "GO")]
    assert {n.set_key for n in names} == {"ACRF.999999.20260731.00001.T"}


def test_set_key_ignores_type_and_parts() -> None:
    assert parse(FI_4_1).set_key == parse(GO_4).set_key


def test_simulation_environment_s() -> None:
    assert parse("GO.DMFA.006400.20070423.00001.S.1").environment == "S"


# --- with_type, format_name, submission_names -------------------------------------


def test_with_type_derives_fs_and_go() -> None:
    fi = parse(FI_4_1)
    assert str(fi.with_type("FS")) == "FS.DMFA.006400.20070423.00001.R.4.1"
    assert str(fi.with_type("GO")) == GO_4
    assert str(fi.with_type("TD")) == "TD.DMFA.006400.20070423.00001.R.4"


def test_with_type_explicit_part() -> None:
    go = parse(GO_4)
    assert str(go.with_type("FI", part=3)) == "FI.DMFA.006400.20070423.00001.R.4.3"


def test_with_type_refuses_what_the_grammar_refuses() -> None:
    with pytest.raises(InvalidName, match="FI names carry both PARTS and PART"):
        parse(GO_4).with_type("FI")
    with pytest.raises(InvalidName, match="GO names carry PARTS alone"):
        parse(FI_4_1).with_type("GO", part=1)
    with pytest.raises(InvalidName, match="unknown type 'XX'"):
        parse(FI_4_1).with_type("XX")


def test_with_type_without_parts() -> None:
    fo = parse("FO.ACRF.999999.20260731.00001.T")
    assert str(fo.with_type("GO")) == "GO.ACRF.999999.20260731.00001.T"


def test_format_name() -> None:
    assert format_name("FI", "DMFA", "006400", D, "00001", "R", 4, 1) == FI_4_1
    assert format_name("GO", "DMFA", "006400", D, "00001", "R", 4) == GO_4
    assert format_name("GO", "DMFA", "006400", D, "00001", "R") == (
        "GO.DMFA.006400.20070423.00001.R"
    )


def test_format_name_pads_old_years() -> None:
    assert format_name("GO", "DMFA", "006400", datetime.date(999, 1, 2), "00001", "R") == (
        "GO.DMFA.006400.09990102.00001.R"
    )


def test_submission_names_one_part() -> None:
    names = submission_names("DMFA", "006400", D, "00001", "R")
    assert names == SubmissionNames(
        fi=["FI.DMFA.006400.20070423.00001.R.1.1"],
        fs=["FS.DMFA.006400.20070423.00001.R.1.1"],
        go="GO.DMFA.006400.20070423.00001.R.1",
    )


def test_submission_names_four_parts() -> None:
    names = submission_names("DMFA", "006400", D, "00001", "R", parts=4)
    assert names.fi == [f"FI.DMFA.006400.20070423.00001.R.4.{i}" for i in range(1, 5)]
    assert names.fs == [f"FS.DMFA.006400.20070423.00001.R.4.{i}" for i in range(1, 5)]
    assert names.go == GO_4


@pytest.mark.parametrize("parts", [0, -1, 10])
def test_submission_names_refuses_bad_part_count(parts: int) -> None:
    with pytest.raises(InvalidName, match="PARTS must be between 1 and 9,"):
        submission_names("DMFA", "006400", D, "00001", "R", parts=parts)


def test_submission_names_refuses_bad_sender() -> None:
    with pytest.raises(InvalidName, match="sender must be 6 digits, got '6400'"):
        submission_names("DMFA", "6400", D, "00001", "R")


# --- refusals with their reasons ---------------------------------------------------


def test_reason_quotes_name_and_says_which_part() -> None:
    with pytest.raises(InvalidName) as info:
        parse("FI.DMFA.6400.20070423.00001.R.1.1")
    assert str(info.value) == (
        "'FI.DMFA.6400.20070423.00001.R.1.1': sender must be 6 digits, got '6400'"
    )
    assert info.value.reason == "sender must be 6 digits, got '6400'"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty file name"),
        ("FI.DMFA.006400.20070423.00001.R.1.1" + "1" * 40, "longer than 64 characters (75)"),
        ("IN/FI.DMFA.006400.20070423.00001.R.1.1", "path separator '/' at position 2"),
        ("..\\FI.DMFA.006400.20070423.00001.R.1.1", "path separator '\\\\' at position 2"),
        ("FI.DMFA.006400.20070423.00001.R.1.1\x00", "control character '\\x00' at position 35"),
        ("FI.DMFA.006400.20070423.00001.R.1.1\n", "control character '\\n' at position 35"),
        ("FI.DMFA.006400.20070423.00001.R.1.1\x7f", "control character '\\x7f'"),
        ("FI.DMFA.006400.20070423.00001.R.1.1\x85", "control character '\\x85'"),
        ("FI.DMFA.006400.20070423.00001.R.1 1", "whitespace ' ' at position 33"),
        ("FI.DMFA.006400.20070423.00001.R.1.1\u2028", "whitespace '\\u2028'"),
        ("FI.DMFA.006400.20070423.00001.R.1.1\u00a0", "whitespace '\\xa0'"),
        ("FI.DMFÄ.006400.20070423.00001.R.1.1", "non-ASCII character 'Ä' at position 6"),
        ("FI.DMFA.006400.20070423.00001.R.\u0661.1", "non-ASCII character"),
        (".FI.DMFA.006400.20070423.00001.R", "element 1 is empty"),
        ("FI.DMFA.006400.20070423.00001.R.", "element 7 is empty"),
        ("FI.DMFA..006400.20070423.00001.R", "element 3 is empty"),
        ("FI.DMFA.006400.20070423.00001", "has 5 elements, expected 6 to 8"),
        ("FI.DMFA.006400.20070423.00001.R.1.1.1", "has 9 elements, expected 6 to 8"),
        ("XX.DMFA.006400.20070423.00001.R.1.1", "unknown type 'XX', expected one of FI, FS"),
        ("fi.DMFA.006400.20070423.00001.R.1.1", "unknown type 'fi' (must be uppercase)"),
        ("FI.DMF.006400.20070423.00001.R.1.1", "application must be 4 characters A-Z or 0-9"),
        ("FI.DMFAX.006400.20070423.00001.R.1.1", "got 'DMFAX'"),
        ("FI.DmFA.006400.20070423.00001.R.1.1", "got 'DmFA' (must be uppercase)"),
        ("FI.DM_A.006400.20070423.00001.R.1.1", "application must be 4 characters"),
        ("FI.DMFA.0064000.20070423.00001.R.1.1", "sender must be 6 digits, got '0064000'"),
        ("FI.DMFA.00640A.20070423.00001.R.1.1", "sender must be 6 digits, got '00640A'"),
        ("FI.DMFA.006400.2007042.00001.R.1.1", "date must be 8 digits YYYYMMDD, got '2007042'"),
        ("FI.DMFA.006400.2007O423.00001.R.1.1", "date must be 8 digits"),
        ("FI.DMFA.006400.20070230.00001.R.1.1", "date '20070230' is not a real calendar date"),
        ("FI.DMFA.006400.20071301.00001.R.1.1", "date '20071301' is not a real calendar date"),
        ("FI.DMFA.006400.00000101.00001.R.1.1", "date '00000101' is not a real calendar date"),
        ("FI.DMFA.006400.20070423.0001.R.1.1", "sequence must be 5 characters 0-9 or A-Z"),
        ("FI.DMFA.006400.20070423.0000a.R.1.1", "got '0000a' (must be uppercase)"),
        ("FI.DMFA.006400.20070423.0000-.R.1.1", "sequence must be 5 characters"),
        ("FI.DMFA.006400.20070423.00001.P.1.1", "environment must be one of R, T, S, got 'P'"),
        ("FI.DMFA.006400.20070423.00001.r.1.1", "got 'r' (must be uppercase)"),
        ("FI.DMFA.006400.20070423.00001.RT.1.1", "environment must be one of R, T, S"),
        ("FI.DMFA.006400.20070423.00001.R.4", "FI names carry both PARTS and PART or neither"),
        ("FS.DMFA.006400.20070423.00001.R.4", "FS names carry both PARTS and PART"),
        ("FO.ACRF.999999.20260731.00001.T.4", "FO names carry both PARTS and PART"),
        ("CO.ACRF.999999.20260731.00001.T.4", "CO names carry both PARTS and PART"),
        ("GO.DMFA.006400.20070423.00001.R.4.1", "GO names carry PARTS alone, not PART"),
        ("TD.DMFA.006400.20070423.00001.R.4.1", "TD names carry PARTS alone, not PART"),
        ("FI.DMFA.006400.20070423.00001.R.0.1", "PARTS must be a positive integer"),
        ("FI.DMFA.006400.20070423.00001.R.01.1", "of one digit (1 to 9), got '01' (ACRF-114)"),
        ("FI.DMFA.006400.20070423.00001.R.4.04", "PART must be a positive integer"),
        ("FI.DMFA.006400.20070423.00001.R.4.0", "PART must be a positive integer"),
        ("FI.DMFA.006400.20070423.00001.R.10.1", "one digit (1 to 9), got '10' (ACRF-114)"),
        ("FI.DMFA.006400.20070423.00001.R.+4.1", "PARTS must be a positive integer"),
        ("FI.DMFA.006400.20070423.00001.R.2.3", "PART 3 is greater than PARTS 2"),
        ("GO.DMFA.006400.20070423.00001.R.0", "PARTS must be a positive integer"),
    ],
)
def test_refusals(text: str, reason: str) -> None:
    with pytest.raises(InvalidName) as info:
        parse(text)
    message = str(info.value)
    assert reason in message
    assert len(message.splitlines()) == 1
    if len(text) <= 64:
        assert message.startswith(repr(text) + ": ")


def test_first_wrong_element_is_reported() -> None:
    with pytest.raises(InvalidName, match="application must be"):
        parse("FI.DMF.6400.2007.0001.X.0.0")
    with pytest.raises(InvalidName, match="sender must be"):
        parse("FI.DMFA.6400.2007.0001.X.0.0")
    with pytest.raises(InvalidName, match="date must be"):
        parse("FI.DMFA.006400.2007.0001.X.0.0")
    with pytest.raises(InvalidName, match="sequence must be"):
        parse("FI.DMFA.006400.20070423.0001.X.0.0")
    with pytest.raises(InvalidName, match="environment must be"):
        parse("FI.DMFA.006400.20070423.00001.X.0.0")


def test_long_hostile_name_is_quoted_short() -> None:
    text = "\n" * 100_000
    with pytest.raises(InvalidName) as info:
        parse(text)
    message = str(info.value)
    assert len(message) < 600
    assert "\n" not in message
    assert "(100000 characters)" in message


def test_parse_refuses_non_str() -> None:
    with pytest.raises(TypeError):
        parse(b"FI.DMFA.006400.20070423.00001.R.1.1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"type": "XX"}, "unknown type 'XX'"),
        ({"application": "dmfa"}, "(must be uppercase)"),
        ({"application": 1234}, "application must be 4 characters A-Z or 0-9, got 1234"),
        ({"sender": "6400"}, "sender must be 6 digits, got '6400'"),
        ({"sender": 6400}, "sender must be 6 digits, got 6400"),
        ({"date": "20070423"}, "date must be a datetime.date, got '20070423'"),
        ({"date": datetime.datetime(2007, 4, 23)}, "date must be a datetime.date"),
        ({"sequence": "1"}, "sequence must be 5 characters"),
        ({"environment": "t"}, "got 't' (must be uppercase)"),
        ({"parts": 4, "part": None}, "FI names carry both PARTS and PART or neither"),
        ({"parts": None, "part": 1}, "FI names carry both PARTS and PART or neither"),
        ({"parts": 0, "part": 1}, "PARTS must be between 1 and 9, got 0 (ACRF-116)"),
        ({"parts": 1, "part": 0}, "PART must be between 1 and 9, got 0"),
        ({"parts": True, "part": 1}, "PARTS must be an integer, got True"),
        ({"parts": "4", "part": 1}, "PARTS must be an integer, got '4'"),
        ({"parts": 2, "part": 3}, "PART 3 is greater than PARTS 2"),
    ],
)
def test_constructor_validates(kwargs: dict[str, object], reason: str) -> None:
    fields: dict[str, object] = {
        "type": "FI",
        "application": "DMFA",
        "sender": "006400",
        "date": D,
        "sequence": "00001",
        "environment": "R",
        "parts": 1,
        "part": 1,
    }
    fields.update(kwargs)
    with pytest.raises(InvalidName, match=f"^'[^\n]*': .*{re.escape(reason)}"):
        FileName(**fields)  # type: ignore[arg-type]


def test_constructor_reason_quotes_draft_name() -> None:
    with pytest.raises(InvalidName) as info:
        FileName("FI", "DMFA", "6400", D, "00001", "R", 1, 1)
    assert str(info.value) == (
        "'FI.DMFA.6400.20070423.00001.R.1.1': sender must be 6 digits, got '6400'"
    )


def test_filename_is_frozen_and_hashable() -> None:
    name = parse(FI_4_1)
    with pytest.raises(AttributeError):
        name.sequence = "00002"  # type: ignore[misc]
    assert {name, parse(FI_4_1)} == {name}


# --- pad_sender ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("6400", "006400"),
        (6400, "006400"),
        ("006400", "006400"),
        ("999999", "999999"),
        (0, "000000"),
        ("1", "000001"),
    ],
)
def test_pad_sender(value: str | int, expected: str) -> None:
    assert pad_sender(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "sender number is empty"),
        ("64a0", "must be digits only, got '64a0'"),
        (" 6400", "must be digits only"),
        ("-6400", "must be digits only"),
        ("\u0661\u0662\u0663", "must be digits only"),
        ("1234567", "more than 6 digits: '1234567'"),
        (1234567, "more than 6 digits"),
        (-1, "must not be negative"),
        (True, "must be digits"),
    ],
)
def test_pad_sender_refuses(value: str | int, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        pad_sender(value)


# --- sequence numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "seq"),
    [
        (1, "00001"),
        (42, "00042"),
        (99999, "99999"),
        (100000, "A0000"),
        (100001, "A0001"),
        (100009, "A0009"),
        (100010, "A000A"),
        (100035, "A000Z"),
        (100036, "A0010"),
        (100000 + 36**4 - 1, "AZZZZ"),
        (100000 + 36**4, "B0000"),
        (SEQUENCE_CAPACITY, "ZZZZZ"),
    ],
)
def test_sequence_for_examples(index: int, seq: str) -> None:
    assert sequence_for(index) == seq
    assert sequence_index(seq) == index


def test_sequence_capacity() -> None:
    assert SEQUENCE_CAPACITY == 99999 + 26 * 36**4


@pytest.mark.parametrize("index", [0, -1, SEQUENCE_CAPACITY + 1])
def test_sequence_for_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match="sequence index must be between 1 and"):
        sequence_for(index)


def test_sequence_for_refuses_non_int() -> None:
    with pytest.raises(TypeError):
        sequence_for(True)
    with pytest.raises(TypeError):
        sequence_for(1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seq", "reason"),
    [
        ("00000", "sequences start at '00001'"),
        ("0A000", "either all digits or starts with a letter"),
        ("9999Z", "either all digits or starts with a letter"),
        ("a0000", "must be 5 characters 0-9 or A-Z"),
        ("A000", "must be 5 characters"),
        ("A00000", "must be 5 characters"),
        ("", "must be 5 characters"),
        ("0000\u0661", "must be 5 characters"),
    ],
)
def test_sequence_index_refuses(seq: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        sequence_index(seq)


def test_sequence_order_around_the_digit_boundary() -> None:
    sequences = [sequence_for(i) for i in range(99_000, 101_500)]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences)


indices = st.integers(min_value=1, max_value=SEQUENCE_CAPACITY)
near_boundaries = st.one_of(
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=99_980, max_value=100_050),
    st.integers(min_value=100_000 + 36**4 - 20, max_value=100_000 + 36**4 + 20),
    st.integers(min_value=SEQUENCE_CAPACITY - 20, max_value=SEQUENCE_CAPACITY),
)


@given(st.one_of(indices, near_boundaries))
def test_sequence_round_trip(index: int) -> None:
    seq = sequence_for(index)
    assert len(seq) == 5
    assert sequence_index(seq) == index
    # Every allocated sequence is a valid SEQ element.
    assert parse(f"GO.DMFA.006400.20070423.{seq}.R").sequence == seq


@given(st.one_of(indices, near_boundaries).filter(lambda i: i < SEQUENCE_CAPACITY))
@example(99999)
@example(100000 + 36**4 - 1)
def test_sequence_strictly_increasing(index: int) -> None:
    assert sequence_for(index) < sequence_for(index + 1)


# --- generated names ----------------------------------------------------------------

_upper_alnum = string.ascii_uppercase + string.digits


@st.composite
def file_names(draw: st.DrawFn) -> FileName:
    """Any valid FileName: every type, environment and parts shape the grammar allows."""
    type_ = draw(st.sampled_from(FILE_TYPES))
    shape = draw(st.sampled_from(["none", "parts"]))
    parts = part = None
    if shape == "parts":
        parts = draw(st.integers(min_value=1, max_value=9))
        if type_ not in ("GO", "TD"):
            part = draw(st.integers(min_value=1, max_value=parts))
    return FileName(
        type=type_,
        application=draw(st.text(_upper_alnum, min_size=4, max_size=4)),
        sender=draw(st.text(string.digits, min_size=6, max_size=6)),
        date=draw(st.dates()),
        sequence=draw(st.text(_upper_alnum, min_size=5, max_size=5).filter(lambda s: s != "00000")),
        environment=draw(st.sampled_from(ENVIRONMENTS)),
        parts=parts,
        part=part,
    )


@given(file_names())
def test_format_parse_round_trip(name: FileName) -> None:
    text = str(name)
    assert parse(text) == name
    assert str(parse(text)) == text
    assert (
        format_name(
            name.type,
            name.application,
            name.sender,
            name.date,
            name.sequence,
            name.environment,
            name.parts,
            name.part,
        )
        == text
    )
    assert text.startswith(f"{name.type}.{name.set_key}")


@given(file_names(), st.data())
def test_inserted_path_separator_is_refused(name: FileName, data: st.DataObject) -> None:
    text = str(name)
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    sep = data.draw(st.sampled_from(["/", "\\", "../", "..\\"]))
    _assert_refused(text[:at] + sep + text[at:])


@given(file_names(), st.data())
def test_dot_dot_is_refused(name: FileName, data: st.DataObject) -> None:
    text = str(name)
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    _assert_refused(text[:at] + ".." + text[at:])


@given(file_names(), st.data())
def test_extra_dot_is_refused(name: FileName, data: st.DataObject) -> None:
    text = str(name)
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    _assert_refused(text[:at] + "." + text[at:])


@given(file_names(), st.data())
def test_dropped_element_is_refused(name: FileName, data: st.DataObject) -> None:
    elements = str(name).split(".")
    drop = data.draw(st.integers(min_value=0, max_value=len(elements) - 1))
    # A GO/TD without PARTS is valid, so dropping its PARTS element is no mutation.
    assume(not (name.type in ("GO", "TD") and len(elements) == 7 and drop == 6))
    _assert_refused(".".join(elements[:drop] + elements[drop + 1 :]))


@given(file_names(), st.data())
def test_lowercased_letter_is_refused(name: FileName, data: st.DataObject) -> None:
    text = str(name)
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    at = data.draw(st.sampled_from(letters))
    _assert_refused(text[:at] + text[at].lower() + text[at + 1 :])


@given(file_names(), st.data())
def test_non_ascii_character_is_refused(name: FileName, data: st.DataObject) -> None:
    text = str(name)
    at = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    char = data.draw(st.characters(min_codepoint=0x80))
    _assert_refused(text[:at] + char + text[at + 1 :])


@given(file_names(), st.data())
def test_newline_and_control_characters_are_refused(name: FileName, data: st.DataObject) -> None:
    text = str(name)
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    char = data.draw(st.sampled_from(["\n", "\r", "\r\n", "\x00", "\t", " ", "\x1b"]))
    _assert_refused(text[:at] + char + text[at:])


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_is_refused_in_one_line(text: str) -> None:
    try:
        name = parse(text)
    except InvalidName as error:
        assert len(str(error).splitlines()) == 1
    else:
        assert str(name) == text


def _assert_refused(text: str) -> None:
    with pytest.raises(InvalidName) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(repr(text) + ": ")
    assert len(message.splitlines()) == 1


# -- as strict as the platform's error list ---------------------------------------------

@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("FI.DMFA.006400.20070423.00001.R.12.1", "ACRF-114"),
        ("GO.DMFA.006400.20070423.00001.R.10", "ACRF-114"),
        ("GO.DMFA.006400.20070423.00001.R.0", "ACRF-116"),
        ("FI.DMFA.006400.20070423.0001.R.1.1", "ACRF-112"),
        ("FI.DMFA.006400.20070423.000001.R.1.1", "ACRF-112"),
        ("FI.DMFA.006400.20070423.0000a.R.1.1", "ACRF-367"),
        ("FI.DMFA.006400.20070423.0000-.R.1.1", "ACRF-367"),
        ("FI.DMFA.006400.20070423.00000.R.1.1", "ACRF-127"),
        ("GO.DMFA.006400.20070423.00000.T.1", "ACRF-127"),
        ("FI.DMFA.006400.2007042.00001.R.1.1", "ACRF-109"),
        ("FI.DMFA.006400.20070230.00001.R.1.1", "ACRF-110"),
        ("FI.DMFA.006400.20070423.00001.P.1.1", "ACRF-117"),
    ],
)
def test_refusals_carry_the_platform_code(text: str, code: str) -> None:
    with pytest.raises(InvalidName) as info:
        parse(text)
    assert info.value.code == code
    assert str(info.value).endswith(f"({code})")


def test_a_date_later_than_today_is_refused_when_today_is_given() -> None:
    name = "GO.DMFA.006400.20070424.00001.S.1"
    assert parse(name).date == datetime.date(2007, 4, 24)  # no today: not checked
    assert parse(name, today=datetime.date(2007, 4, 24)).environment == "S"
    with pytest.raises(InvalidName) as info:
        parse(name, today=datetime.date(2007, 4, 23))
    assert info.value.code == "ACRF-111"
    assert info.value.reason == "date 20070424 is later than today, 20070423 (ACRF-111)"


def test_flad_never_writes_what_the_platform_refuses() -> None:
    with pytest.raises(InvalidName, match=r"ACRF-127"):
        submission_names("DMFA", "006400", D, "00000", "R")
    with pytest.raises(InvalidName, match=r"ACRF-114"):
        submission_names("DMFA", "006400", D, "00001", "R", parts=10)
    nine = submission_names("DMFA", "006400", D, "00001", "S", parts=9)
    assert nine.fi[-1] == "FI.DMFA.006400.20070423.00001.S.9.9"
    assert nine.go == "GO.DMFA.006400.20070423.00001.S.9"
    assert sequence_for(1) == "00001"  # the first sequence is never zero
