"""Enterprise numbers, mandate lists and the quality rules of check_identity."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flad.identity import (
    MANDATARY_QUALITIES,
    QUALITIES,
    IdentityVerdict,
    check_identity,
    enterprise_number_problem,
    is_valid_enterprise_number,
    normalize_enterprise_number,
    parse_mandates,
)


def make_number(first_eight: int) -> str:
    """A valid enterprise number: 8 digits, then 97 minus their value modulo 97."""
    return f"{first_eight:08d}{97 - first_eight % 97:02d}"


COMPANY = "0123456749"
CLIENT_A = make_number(2_000_000)
CLIENT_B = make_number(3_141_592)
OTHER = make_number(4_000_001)
INVALID = "0123456748"  # one off the check digits of COMPANY

eight_digits = st.integers(min_value=0, max_value=99_999_999)


# --- enterprise numbers -------------------------------------------------------------


def test_example_number_is_valid() -> None:
    assert make_number(1_234_567) == COMPANY
    assert enterprise_number_problem(COMPANY) is None
    assert is_valid_enterprise_number(COMPANY)


def test_check_digits_97_when_divisible() -> None:
    number = make_number(97 * 12_345)
    assert number.endswith("97")
    assert is_valid_enterprise_number(number)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (INVALID, "enterprise number '0123456748' fails the mod-97 check"),
        ("0123456700", "(its last two digits must be 49)"),
        ("123456749", "enterprise number '123456749' must be 10 digits"),
        ("01234567490", "must be 10 digits"),
        ("0123.456.749", "must be 10 digits"),
        (" 0123456749", "must be 10 digits"),
        ("", "enterprise number '' must be 10 digits"),
        ("012345674a", "must be 10 digits"),
        ("\u0660123456749", "must be 10 digits"),
        ("0123456749\n", "must be 10 digits"),
    ],
)
def test_enterprise_number_problems(value: str, reason: str) -> None:
    problem = enterprise_number_problem(value)
    assert problem is not None
    assert reason in problem
    assert len(problem.splitlines()) == 1
    assert not is_valid_enterprise_number(value)


@given(eight_digits)
def test_any_eight_digits_with_computed_check_are_valid(first_eight: int) -> None:
    assert is_valid_enterprise_number(make_number(first_eight))


@given(eight_digits, st.integers(min_value=0, max_value=9), st.integers(min_value=1, max_value=9))
def test_changing_one_digit_makes_it_invalid(first_eight: int, position: int, shift: int) -> None:
    number = make_number(first_eight)
    changed = str((int(number[position]) + shift) % 10)
    mutated = number[:position] + changed + number[position + 1 :]
    assert mutated != number
    problem = enterprise_number_problem(mutated)
    assert problem is not None
    assert "fails the mod-97 check" in problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0123.456.749", "0123456749"),
        ("0123 456 749", "0123456749"),
        (" 0123456749\n", "0123456749"),
        ("123.456.749", "0123456749"),
        ("123456749", "0123456749"),
        ("0123456749", "0123456749"),
        ("BE0123456749", "BE0123456749"),  # not validated: left for the check to refuse
        ("12345", "12345"),
        ("", ""),
    ],
)
def test_normalize_enterprise_number(value: str, expected: str) -> None:
    assert normalize_enterprise_number(value) == expected


@given(eight_digits)
def test_normalized_dotted_form_is_valid(first_eight: int) -> None:
    number = make_number(first_eight)
    dotted = f"{number[:4]}.{number[4:7]}.{number[7:]}"
    assert normalize_enterprise_number(dotted) == number
    if number.startswith("0"):
        assert normalize_enterprise_number(number[1:]) == number


# --- mandate lists ------------------------------------------------------------------


def test_parse_mandates() -> None:
    text = (
        "# clients of the secretariat\n"
        "\n"
        f"{CLIENT_A}\n"
        f"  {CLIENT_B[:4]}.{CLIENT_B[4:7]}.{CLIENT_B[7:]}   # dotted, with a comment\n"
        f"{CLIENT_A}\r\n"
        "   \n"
        f"{COMPANY[1:]}\n"
    )
    assert parse_mandates(text) == frozenset({CLIENT_A, CLIENT_B, COMPANY})


def test_parse_mandates_empty() -> None:
    assert parse_mandates("") == frozenset()
    assert parse_mandates("# nothing yet\n\n") == frozenset()


def test_parse_mandates_names_source_and_line() -> None:
    text = f"# header\n{CLIENT_A}\n{INVALID}\n"
    with pytest.raises(ValueError) as info:
        parse_mandates(text, source="/etc/flad/mandates.txt")
    assert str(info.value) == (
        "/etc/flad/mandates.txt, line 3: '0123456748' is not a valid enterprise number: "
        "it fails the mod-97 check (its last two digits must be 49)"
    )


def test_parse_mandates_default_source_and_garbage() -> None:
    with pytest.raises(
        ValueError,
        match=r"^mandates, line 1: 'acme nv' is not a valid enterprise number: "
        r"it must be 10 digits$",
    ):
        parse_mandates("acme nv\n")


# --- check_identity -----------------------------------------------------------------


def check(
    quality: str,
    *,
    employers: list[str] | tuple[str, ...] = (),
    senders: list[str] | tuple[str, ...] = (),
    mandates: frozenset[str] | None = None,
    company_id: str = COMPANY,
) -> IdentityVerdict:
    return check_identity(
        quality=quality,
        company_id=company_id,
        employers=employers,
        senders=senders,
        mandates=mandates,
    )


def assert_refused(verdict: IdentityVerdict, *fragments: str) -> None:
    assert not verdict.ok
    assert verdict.reason is not None
    assert len(verdict.reason.splitlines()) == 1
    for fragment in fragments:
        assert fragment in verdict.reason


def test_qualities() -> None:
    assert set(QUALITIES) == {
        "employer",
        "social_secretariat",
        "service_provider",
        "training_provider",
    }
    assert {"social_secretariat", "service_provider"} == MANDATARY_QUALITIES
    assert set(QUALITIES) > MANDATARY_QUALITIES


def test_unknown_quality_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown quality 'payroll'"):
        check("payroll", employers=[COMPANY])


def test_invalid_company_id_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="the channel's enterprise number is not valid"):
        check("employer", employers=[COMPANY], company_id=INVALID)


def test_company_id_is_normalized() -> None:
    verdict = check("employer", employers=[COMPANY], company_id="123.456.749")
    assert verdict == IdentityVerdict(ok=True, reason=None, warnings=())


# every quality: the sender is the channel's company


@pytest.mark.parametrize("quality", QUALITIES)
def test_sender_must_be_the_company(quality: str) -> None:
    verdict = check(quality, employers=[COMPANY], senders=[OTHER], mandates=frozenset({COMPANY}))
    assert_refused(
        verdict,
        f"the file names {OTHER} as sender, but this channel belongs to {COMPANY}",
    )


@pytest.mark.parametrize("quality", QUALITIES)
def test_sender_equal_to_company_is_accepted(quality: str) -> None:
    senders = [COMPANY, "0123.456.749", "123456749"]
    verdict = check(quality, employers=[COMPANY], senders=senders, mandates=frozenset({COMPANY}))
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("quality", QUALITIES)
def test_invalid_sender_in_data_is_refused(quality: str) -> None:
    verdict = check(quality, employers=[COMPANY], senders=["0123.456.748"])
    assert_refused(
        verdict,
        "the file names '0123.456.748' as sender, which is not a valid enterprise number",
        "fails the mod-97 check (its last two digits must be 49)",
    )


@pytest.mark.parametrize("quality", QUALITIES)
def test_invalid_employer_in_data_is_refused(quality: str) -> None:
    verdict = check(quality, employers=[COMPANY, "12AB"], mandates=frozenset({COMPANY}))
    assert_refused(
        verdict,
        "the file names '12AB' as employer, which is not a valid enterprise number",
        "must be 10 digits",
    )


def test_hostile_number_in_data_stays_one_line() -> None:
    verdict = check("training_provider", employers=["0123\n456749"])
    assert_refused(verdict, "the file names '0123\\n456749' as employer")


def test_huge_value_in_data_is_quoted_short() -> None:
    verdict = check("training_provider", employers=["9" * 100_000])
    assert_refused(verdict, "'9999999999", "... (100000 characters) as employer")
    assert verdict.reason is not None and len(verdict.reason) < 300


def test_single_str_instead_of_sequence_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="employers must be a sequence"):
        check("employer", employers=COMPANY)  # type: ignore[arg-type]


# employer


def test_employer_sends_for_itself() -> None:
    verdict = check("employer", employers=[COMPANY, "0123.456.749"], senders=[COMPANY])
    assert verdict == IdentityVerdict(ok=True, reason=None, warnings=())


def test_employer_may_not_send_for_another() -> None:
    verdict = check("employer", employers=[COMPANY, OTHER], senders=[COMPANY])
    assert_refused(
        verdict,
        f"the file is for employer {OTHER}, but this channel's company is {COMPANY}",
        "an employer sends only for its own enterprise number",
    )


def test_employer_ignores_mandates() -> None:
    verdict = check("employer", employers=[OTHER], mandates=frozenset({OTHER}))
    assert_refused(verdict, "an employer sends only for its own enterprise number")


def test_employer_without_employer_number_is_accepted_with_warning() -> None:
    verdict = check("employer", senders=[COMPANY])
    assert verdict.ok
    assert verdict.warnings == (
        f"no employer enterprise number found in the file; taken to be {COMPANY}",
    )


# mandataries


@pytest.mark.parametrize("quality", sorted(MANDATARY_QUALITIES))
def test_mandatary_with_mandates(quality: str) -> None:
    mandates = frozenset({CLIENT_A, CLIENT_B})
    verdict = check(quality, employers=[CLIENT_A, CLIENT_B, CLIENT_A], mandates=mandates)
    assert verdict == IdentityVerdict(ok=True, reason=None, warnings=())


@pytest.mark.parametrize("quality", sorted(MANDATARY_QUALITIES))
def test_mandatary_without_mandate_is_refused(quality: str) -> None:
    verdict = check(quality, employers=[CLIENT_A, OTHER], mandates=frozenset({CLIENT_A}))
    assert_refused(
        verdict,
        f"employer {OTHER} has given {COMPANY} no mandate: it is not in the mandate list",
    )


@pytest.mark.parametrize("quality", sorted(MANDATARY_QUALITIES))
def test_mandatary_with_empty_mandate_list_refuses_all(quality: str) -> None:
    verdict = check(quality, employers=[CLIENT_A], mandates=frozenset())
    assert_refused(verdict, f"employer {CLIENT_A} has given {COMPANY} no mandate")


@pytest.mark.parametrize("quality", sorted(MANDATARY_QUALITIES))
def test_mandatary_compares_normalized_numbers(quality: str) -> None:
    dotted_a = f"{CLIENT_A[:4]}.{CLIENT_A[4:7]}.{CLIENT_A[7:]}"
    verdict = check(quality, employers=[dotted_a], mandates=frozenset({CLIENT_A}))
    assert verdict.ok, verdict.reason
    # A mandate set built by hand, not by parse_mandates, is normalized too.
    verdict = check(quality, employers=[CLIENT_A], mandates=frozenset({dotted_a}))
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("quality", sorted(MANDATARY_QUALITIES))
def test_mandatary_may_send_for_its_own_company_only_with_mandate(quality: str) -> None:
    # A company of a group acting as mandatary is checked like any client.
    assert check(quality, employers=[COMPANY], mandates=frozenset({COMPANY})).ok
    assert not check(quality, employers=[COMPANY], mandates=frozenset({CLIENT_A})).ok


@pytest.mark.parametrize("quality", sorted(MANDATARY_QUALITIES))
def test_mandatary_without_mandate_list_warns_per_employer(quality: str) -> None:
    verdict = check(quality, employers=[CLIENT_A, CLIENT_B, CLIENT_A], mandates=None)
    assert verdict.ok
    assert verdict.reason is None
    assert verdict.warnings == (
        f"no mandate list configured; cannot check that {CLIENT_A} has given a mandate",
        f"no mandate list configured; cannot check that {CLIENT_B} has given a mandate",
    )


@pytest.mark.parametrize("quality", sorted(MANDATARY_QUALITIES))
@pytest.mark.parametrize("mandates", [None, frozenset({CLIENT_A})])
def test_mandatary_without_employer_is_refused(
    quality: str, mandates: frozenset[str] | None
) -> None:
    verdict = check(quality, employers=[], senders=[COMPANY], mandates=mandates)
    assert verdict == IdentityVerdict(
        ok=False, reason="no employer enterprise number found in the file", warnings=()
    )


# training provider


def test_training_provider_employers_are_free() -> None:
    verdict = check("training_provider", employers=[CLIENT_A, OTHER], senders=[COMPANY])
    assert verdict == IdentityVerdict(ok=True, reason=None, warnings=())


def test_training_provider_without_employer() -> None:
    assert check("training_provider", senders=[COMPANY]).ok


# properties


@given(eight_digits, st.sampled_from(QUALITIES))
def test_any_valid_own_number_is_accepted(first_eight: int, quality: str) -> None:
    number = make_number(first_eight)
    verdict = check(
        quality,
        company_id=number,
        employers=[number],
        senders=[number],
        mandates=frozenset({number}),
    )
    assert verdict.ok, verdict.reason


@given(eight_digits, eight_digits)
def test_employer_refuses_any_other_number(own: int, other: int) -> None:
    own_number, other_number = make_number(own), make_number(other)
    verdict = check("employer", company_id=own_number, employers=[other_number])
    assert verdict.ok == (own_number == other_number)
