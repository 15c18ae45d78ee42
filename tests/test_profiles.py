"""The DmfA, DIMONA and generic profiles: every form, every employer, either number.

Files are built by tests/declarations.py following the official schemas; where
../shared/platform is present they are validated against those schemas, and the
documentation examples go through `flad validate` as an operator would run it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from flad import config as config_mod
from flad import identity, profiles, xmlcheck
from flad.cli import main
from flad.filecheck import FileChecker, Rejected
from flad.identity import EmployerRef, FormIdentity, check_forms, parse_mandate_numbers
from tests import configs
from tests import declarations as decl

COMPANY = configs.VALID_COMPANY
OTHER = configs.OTHER_COMPANY
NOSS_BAD_CHECK = "175110802"  # 9 digits, fails the examples' check-digit rule
EXAMPLES = decl.PLATFORM / "examples"
needs_platform = pytest.mark.skipif(not (decl.PLATFORM / "xsd").is_dir(),
                                    reason="../shared/platform is absent")


def app(profile: str, **extra: Any) -> dict[str, Any]:
    """An application with a profile; the official XSD when present, else none."""
    table: dict[str, Any] = {"name": profile, "profile": profile, **extra}
    if profile != "dmfa":
        table.setdefault("code", "DIMN" if profile == "dimona" else "GENE")
    xsd = decl.official_xsd(profile)
    if xsd is not None:
        table.setdefault("xsd", xsd)
    return table


def load(tmp: Path, *apps: dict[str, Any], mandates: str | None = None,
         **extra: Any) -> config_mod.ChannelConfig:
    if mandates is not None:
        path = tmp / "mandates.txt"
        path.write_text(mandates, encoding="utf-8")
        extra["mandates"] = path
    ch = configs.channel(tmp, application=list(apps), **extra)
    return config_mod.load(configs.write(tmp, [ch])).channels[0]


def verdict(channel: config_mod.ChannelConfig, name: str, data: bytes) -> tuple[str, ...]:
    application = channel.application(name)
    assert application is not None
    return FileChecker(channel).check(application, "test", data)


def refusal(channel: config_mod.ChannelConfig, name: str, data: bytes) -> str:
    with pytest.raises(Rejected) as info:
        verdict(channel, name, data)
    reason = str(info.value)
    assert "\n" not in reason
    return reason


# -- the builders follow the official schemas -----------------------------------------

@needs_platform
@pytest.mark.parametrize(("profile", "data"), [
    ("dmfa", decl.dmfa(((decl.NOSS_TEST, "0"), (decl.NOSS_A, COMPANY)), workers=2,
                       quarters=("20223", "20224"))),
    ("dimona", decl.dimona(((decl.NOSS_A, None), (None, COMPANY), (decl.NOSS_B, OTHER)))),
    ("generic", decl.generic(([(decl.NOSS_B, "852093431")],
                              [(decl.NOSS_A, COMPANY), (decl.NOSS_B, OTHER)]))),
])
def test_the_test_files_follow_the_official_schemas(profile: str, data: bytes) -> None:
    path = decl.official_xsd(profile)
    assert path is not None
    schema = xmlcheck.load_schema(path)
    assert schema.validate(etree.fromstring(data)), schema.error_log.last_error


# -- DmfA: CompanyID 0 and an ONSS number ----------------------------------------------

def test_dmfa_with_company_id_0_goes_by_its_onss_number(tmp_path: Path) -> None:
    data = decl.dmfa(((decl.NOSS_TEST, "0"),))
    channel = load(tmp_path, app("dmfa"), noss_number=decl.NOSS_TEST)
    assert channel.application("dmfa") is not None
    assert channel.applications[0].code == "DMFA"  # fixed by the profile
    assert channel.applications[0].root_element == "DmfAOriginal"
    assert verdict(channel, "dmfa", data) == ()


def test_dmfa_for_an_employer_channel_without_its_onss_number(tmp_path: Path) -> None:
    data = decl.dmfa(((decl.NOSS_TEST, "0"),))
    channel = load(tmp_path, app("dmfa"))
    reason = refusal(channel, "dmfa", data)
    assert reason == ("form 1 (DMFA, created 2022-08-11 08:45:00.000): the employer is named "
                      "by ONSS number 199999934 only, and this channel has no noss_number: "
                      "set noss_number in its configuration")


def test_every_form_and_employer_of_a_dmfa_is_checked(tmp_path: Path) -> None:
    # two quarters, two employers each: the fourth form is someone else's
    data = decl.dmfa(((decl.NOSS_TEST, COMPANY), (decl.NOSS_A, "0")), quarters=("20223",
                                                                                  "20224"))
    channel = load(tmp_path, app("dmfa"), noss_number=decl.NOSS_TEST)
    reason = refusal(channel, "dmfa", data)
    assert reason.startswith("form 2 (DMFA, created 2022-08-11 08:45:00.000): ")
    assert "ONSS number 175110801" in reason and "199999934" in reason
    # the same numbers in every form: accepted
    ok = decl.dmfa(((decl.NOSS_TEST, COMPANY),), quarters=("20223", "20224"))
    assert verdict(channel, "dmfa", ok) == ()


def test_a_form_named_by_neither_number_is_refused(tmp_path: Path) -> None:
    channel = load(tmp_path, app("dmfa"), noss_number=decl.NOSS_TEST)
    reason = refusal(channel, "dmfa", decl.dmfa((("0", "0"),)))
    assert reason == ("form 1 (DMFA, created 2022-08-11 08:45:00.000) names its employer by "
                      "neither an enterprise number nor an ONSS number (both absent or 0)")


def test_an_onss_number_failing_its_check_is_a_warning(tmp_path: Path) -> None:
    channel = load(tmp_path, app("dimona"), noss_number=NOSS_BAD_CHECK)
    warnings = verdict(channel, "dimona", decl.dimona(((NOSS_BAD_CHECK, None),)))
    assert len(warnings) == 1 and "175110802 fails the usual check" in warnings[0]
    assert "would be 01" in warnings[0]


def test_an_employer_may_be_named_by_its_enterprise_number(tmp_path: Path) -> None:
    channel = load(tmp_path, app("dimona"))
    assert verdict(channel, "dimona", decl.dimona(((None, COMPANY),))) == ()
    reason = refusal(channel, "dimona", decl.dimona(((None, COMPANY), (None, OTHER))))
    assert reason.startswith("form 2 (DIMONA, created 2023-02-06 14:35:02.000): ")
    assert f"enterprise number {OTHER}" in reason


# -- DIMONA from a social secretariat, mandates by ONSS number ----------------------------

def test_dimona_by_onss_number_from_a_social_secretariat(tmp_path: Path) -> None:
    channel = load(tmp_path, app("dimona"), quality="social_secretariat",
                   mandates=f"# clients\n{OTHER}\n{decl.NOSS_A}   # by ONSS number\n")
    assert verdict(channel, "dimona", decl.dimona(((decl.NOSS_A, None),))) == ()
    reason = refusal(channel, "dimona", decl.dimona(((decl.NOSS_B, None),)))
    assert reason == ("form 1 (DIMONA, created 2023-02-06 14:35:01.000): the employer (ONSS "
                      f"number 127792067) has given {COMPANY} no mandate: neither number is "
                      "in the mandate list")


# -- generic: several forms, one outside the mandates -----------------------------------

def test_generic_document_with_a_form_outside_the_mandates(tmp_path: Path) -> None:
    channel = load(tmp_path, app("generic"), quality="service_provider",
                   mandates=f"{decl.NOSS_B}\n0852.093.431\n")
    inside = [(decl.NOSS_B, "852093431")]
    data = decl.generic((inside, [(decl.NOSS_B, "852093431"), (decl.NOSS_A, OTHER)], inside))
    reason = refusal(channel, "generic", data)
    assert reason == ("form 2 (ECOUDRQ, created 2025-11-16 11:56:02.781): the employer "
                      f"(enterprise number {OTHER} and ONSS number 175110801) has given "
                      f"{COMPANY} no mandate: neither number is in the mandate list")
    assert verdict(channel, "generic", decl.generic((inside, inside))) == ()


def test_generic_reads_the_employer_not_its_handled_employer(tmp_path: Path) -> None:
    # EmployerId/HandledEmployerId names another employer: not the one the form is for
    data = decl.generic(([(decl.NOSS_A, COMPANY)],)).replace(
        f"<CompanyID>{COMPANY}</CompanyID></EmployerId>".encode(),
        f"<CompanyID>{COMPANY}</CompanyID><HandledEmployerId><CompanyID>{OTHER}</CompanyID>"
        "</HandledEmployerId></EmployerId>".encode())
    doc = xmlcheck.check_document(data, schema=None, root_element=None, employer_xpath=None,
                                  sender_xpath=None, profile=profiles.PROFILES["generic"])
    assert doc.forms[0].employers == (EmployerRef(COMPANY, decl.NOSS_A),)


# -- the streamed check reads the same forms -------------------------------------------

@pytest.mark.parametrize("profile", ["dmfa", "dimona", "generic"])
def test_streamed_and_tree_checks_read_the_same_forms(
        profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    big = {"dmfa": decl.dmfa(((decl.NOSS_TEST, "0"), (decl.NOSS_A, COMPANY)), workers=800),
           "dimona": decl.dimona([(decl.NOSS_A, None), (None, COMPANY)] * 2000),
           "generic": decl.generic([[(decl.NOSS_B, "852093431"), (decl.NOSS_A, OTHER)]] * 4000)
           }[profile]
    assert len(big) > 2 * 1024 * 1024  # several chunks of the stream
    chosen = profiles.PROFILES[profile]
    path = decl.official_xsd(profile)
    schema = xmlcheck.load_schema(path) if path is not None else None
    tree = xmlcheck.check_document(big, schema=schema, root_element=chosen.root_element,
                                   employer_xpath=None, sender_xpath=None, profile=chosen)
    seen: list[bool] = []
    real = xmlcheck._stream_check

    def spy(*args: Any) -> xmlcheck.CheckedDocument | None:
        result = real(*args)
        seen.append(result is not None)
        return result

    monkeypatch.setattr(xmlcheck, "STREAM_BYTES", 0)
    monkeypatch.setattr(xmlcheck, "_stream_check", spy)
    streamed = xmlcheck.check_document(big, schema=schema, root_element=chosen.root_element,
                                       employer_xpath=None, sender_xpath=None, profile=chosen)
    assert seen == [True]  # accepted by the stream alone
    assert streamed.forms == tree.forms and len(tree.forms) >= 2
    assert all(form.employers for form in tree.forms)


# -- identity rules, pure -----------------------------------------------------------------

def form(*employers: tuple[str | None, str | None], position: int = 1) -> FormIdentity:
    return FormIdentity(position, "DMFA", "2022-08-11", "08:45:00.000",
                        tuple(EmployerRef(e, n) for e, n in employers))


def test_contradicting_numbers_on_an_employer_channel() -> None:
    result = check_forms(quality="employer", company_id=COMPANY, noss_number=decl.NOSS_TEST,
                         forms=[form((OTHER, decl.NOSS_TEST))], mandates=None)
    assert not result.ok and f"enterprise number {OTHER}" in (result.reason or "")


def test_a_training_provider_names_any_employer() -> None:
    result = check_forms(quality="training_provider", company_id=COMPANY,
                         forms=[form(("0", decl.NOSS_A))], mandates=None)
    assert result.ok and result.warnings == ()


def test_a_form_without_employer_element() -> None:
    bare = FormIdentity(1, "DIMONA", "2023-01-03", "14:35:00.000", ())
    ok = check_forms(quality="employer", company_id=COMPANY, forms=[bare], mandates=None)
    assert ok.ok and ok.warnings == (
        f"form 1 (DIMONA, created 2023-01-03 14:35:00.000) names no employer; taken to be "
        f"{COMPANY}",)
    refused = check_forms(quality="social_secretariat", company_id=COMPANY, forms=[bare],
                          mandates=frozenset())
    assert not refused.ok and "names no employer" in (refused.reason or "")


def test_a_garbage_number_is_refused_naming_it() -> None:
    result = check_forms(quality="employer", company_id=COMPANY, noss_number=decl.NOSS_A,
                         forms=[form((None, "12x"), position=3)], mandates=None)
    assert result.reason == ("form 3 (DMFA, created 2022-08-11 08:45:00.000): employer ONSS "
                             "number '12x' is not valid: it must be 9 digits NNNNNNNCC")


def test_many_warnings_are_cut_short() -> None:
    forms = [form((None, decl.noss_number(i * 7 + 1)[:7] + "99"), position=i)
             for i in range(1, 40)]
    result = check_forms(quality="training_provider", company_id=COMPANY, forms=forms,
                         mandates=None)
    assert result.ok and len(result.warnings) == 21
    assert result.warnings[-1].startswith("and ") and "more warnings" in result.warnings[-1]


def test_onss_numbers_as_xml_writes_them() -> None:
    assert identity.normalize_noss_number(" 100006 ") == "000100006"
    assert identity.normalize_noss_number("1999999-34") == "199999934"
    assert identity.normalize_noss_number("0199999934") == "199999934"
    assert identity.noss_number_problem("19999993") is not None
    assert identity.noss_check_problem(decl.NOSS_TEST) is None
    assert identity.noss_check_problem(decl.noss_number(1234567)) is None


def test_mandate_lists_take_both_kinds_of_number() -> None:
    warnings: list[str] = []
    numbers = parse_mandate_numbers(
        f"{OTHER}\n{decl.NOSS_A}\n{NOSS_BAD_CHECK}  # a typo?\n{COMPANY[1:]}\n",
        "m.txt", warnings)
    # a 9-digit line valid as an enterprise number without its 0 counts as both
    assert numbers == frozenset({OTHER, decl.NOSS_A, NOSS_BAD_CHECK, COMPANY, COMPANY[1:]})
    assert warnings == [f"m.txt, line 3: ONSS number {NOSS_BAD_CHECK} fails the usual check "
                        "(its last two digits would be 01); sent anyway, the platform decides"]
    with pytest.raises(ValueError, match=r"^m.txt, line 1: 'acme' is neither an enterprise "
                                         r"number \(10 digits, mod-97\) nor an ONSS number"):
        parse_mandate_numbers("acme\n", "m.txt")
    with pytest.raises(ValueError, match="is not a valid enterprise number: it fails the mod"):
        parse_mandate_numbers("0123456748\n", "m.txt")


# -- configuration -------------------------------------------------------------------------

def test_profile_keys_and_overrides(tmp_path: Path) -> None:
    channel = load(tmp_path, app("dmfa", code="DMF2", root_element="Other",
                                 employer_xpath="//*[local-name()='EmployerDeclaration']"),
                   app("generic"), noss_number="1999999-34")
    dmfa_app, generic_app = channel.applications
    assert (dmfa_app.code, dmfa_app.root_element) == ("DMF2", "Other")
    assert dmfa_app.employer_xpath == "//*[local-name()='EmployerDeclaration']"
    assert generic_app.employer_xpath is None and generic_app.sender_xpath is None
    assert generic_app.root_element == "GenericXmlDocument"
    assert channel.noss_number == "199999934"


def test_profile_problems_are_named(tmp_path: Path) -> None:
    ch = configs.channel(tmp_path, application=[{"name": "x", "profile": "fla"},
                                                {"name": "d", "profile": "dimona"}],
                         noss_number="12345x")
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(configs.write(tmp_path, [ch]))
    text = "\n".join(info.value.problems)
    assert "application[0].profile: unknown profile 'fla', expected one of dmfa, dimona, " \
           "generic" in text
    assert "application[1].code: is required" in text
    assert "noss_number: '12345x' is not an ONSS registration number" in text


def test_an_employer_id_container_without_profile(tmp_path: Path) -> None:
    # the default employer XPath selects EmployerId: its two numbers, not their text
    data = (f"<Decl><EmployerId>\n\t<NOSSRegistrationNbr>{decl.NOSS_A}</NOSSRegistrationNbr>"
            f"\n\t<CompanyID>{COMPANY}</CompanyID></EmployerId></Decl>").encode()
    channel = load(tmp_path, {"name": "fla", "code": "FLAX"})
    assert verdict(channel, "fla", data) == ()


# -- done means: the documentation examples through `flad validate` ------------------------

EXAMPLE_CASES = [
    # example, profile, the matching channel's settings, a channel whose numbers do not match
    ("DmfAOriginal_20223_1.xml", "dmfa", {"noss_number": "199999934"},
     {"noss_number": decl.NOSS_A}),
    ("Dimona_20231_1.xml", "dimona", {"noss_number": "175110801"},
     {"quality": "social_secretariat", "mandates": f"{decl.NOSS_TEST}\n"}),
    ("Dimona_20231_2.xml", "dimona",
     {"quality": "social_secretariat", "mandates": "175110801\n"},
     {"noss_number": decl.NOSS_TEST}),
    # a daily registration names no employer: its own employer's channel may send it
    ("Dimona_20231_3.xml", "dimona", {"noss_number": "175110801"},
     {"quality": "service_provider", "mandates": "175110801\n"}),
    ("GenericXmlDocument_20231_1.xml", "generic", {"company_id": "0852093431"},
     {"noss_number": decl.NOSS_B}),
]


@needs_platform
@pytest.mark.parametrize(("example", "profile", "matching", "other"), EXAMPLE_CASES)
def test_flad_validate_takes_the_documentation_examples(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], example: str, profile: str,
        matching: dict[str, Any], other: dict[str, Any]) -> None:
    path = EXAMPLES / example
    for case, settings, expected in (("match", matching, 0), ("other", other, 1)):
        folder = tmp_path / case
        folder.mkdir()
        settings = dict(settings)
        if "mandates" in settings:
            (folder / "mandates.txt").write_text(settings["mandates"], encoding="utf-8")
            settings["mandates"] = folder / "mandates.txt"
        ch = configs.channel(folder, application=[app(profile)], **settings)
        config = configs.write(folder, [ch])
        capsys.readouterr()
        code = main(["validate", "-c", str(config), str(path)])
        out = capsys.readouterr().out
        assert code == expected, out
        if expected == 0:
            assert out.startswith(f"{path}: OK"), out
        else:
            assert out.startswith(f"{path}: REFUSED: form 1 ("), out
            assert len(out.splitlines()) == 1


@needs_platform
def test_every_declaration_example_is_covered() -> None:
    declarations = {p.name for p in EXAMPLES.glob("*.xml")
                    if p.name.split("_")[0] in ("DmfAOriginal", "Dimona", "GenericXmlDocument")}
    assert declarations == {case[0] for case in EXAMPLE_CASES}


def test_flad_check_says_which_schema_each_profile_expects(tmp_path: Path) -> None:
    from flad.cli import checkup
    ch = configs.channel(tmp_path, application=[app("dmfa"), app("generic")],
                         noss_number=decl.NOSS_TEST)
    findings = checkup.check_all(configs.write(tmp_path, [ch]), offline=True)
    lines = [f.line() for f in findings if "application" in f.subject]
    assert any("profile 'dmfa' (DmfA, quarterly declaration) expects DmfAOriginal_20223.xsd, "
               "root DmfAOriginal; code DMFA, root element DmfAOriginal" in line
               for line in lines), lines
    assert any("expects GenericXmlDocument_20224.xsd, root "
               "{http://www.smals-mvm.be/xml/ns/systemFlux}GenericXmlDocument" in line
               for line in lines), lines


# -- big files: validated form by form where the schema allows it ---------------------------

_MINI_XSD = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="DmfAOriginal"><xs:complexType><xs:sequence>
    <xs:element ref="Form" maxOccurs="unbounded"{min}/>{more}
  </xs:sequence></xs:complexType></xs:element>
  <xs:element name="Form" type="xs:string"/>{extra}
</xs:schema>
"""


@pytest.mark.parametrize(("changes", "alone"), [
    ({}, True),
    ({"min": ' minOccurs="2"'}, False),
    ({"more": '<xs:element name="Trailer" type="xs:string"/>'}, False),
    ({"extra": '<xs:element name="X"><xs:complexType><xs:sequence>'
               '<xs:element name="Y" type="xs:string"/></xs:sequence></xs:complexType>'
               '<xs:unique name="u"><xs:selector xpath="Y"/><xs:field xpath="."/>'
               '</xs:unique></xs:element>'}, False),
    ({"extra": '<xs:element name="Z" type="xs:IDREF"/>'}, False),
])
def test_forms_validate_alone_only_where_the_schema_says_so(
        tmp_path: Path, changes: dict[str, str], alone: bool) -> None:
    path = tmp_path / "mini.xsd"
    path.write_text(_MINI_XSD.format(**{"min": "", "more": "", "extra": "", **changes}))
    assert xmlcheck.forms_validate_alone(path, profiles.PROFILES["dmfa"]) is alone
    assert not xmlcheck.forms_validate_alone(tmp_path / "missing.xsd", profiles.PROFILES["dmfa"])


@needs_platform
def test_the_official_schemas_validate_form_by_form() -> None:
    for name, profile in profiles.PROFILES.items():
        path = decl.official_xsd(name)
        assert path is not None and xmlcheck.forms_validate_alone(path, profile), name


@pytest.fixture
def split_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every big-file path taken: 'split', 'too big' or 'stream'."""
    taken: list[str] = []
    split, stream = xmlcheck._split_check, xmlcheck._stream_check

    def spy_split(*args: Any) -> Any:
        result = split(*args)
        taken.append("too big" if isinstance(result, xmlcheck._FormTooBig) else
                      "split" if result is not None else "split refused")
        return result

    def spy_stream(*args: Any) -> Any:
        taken.append("stream")
        return stream(*args)

    monkeypatch.setattr(xmlcheck, "STREAM_BYTES", 0)
    monkeypatch.setattr(xmlcheck, "_split_check", spy_split)
    monkeypatch.setattr(xmlcheck, "_stream_check", spy_stream)
    return taken


def _checked(data: bytes, split: bool = True) -> xmlcheck.CheckedDocument:
    path = decl.official_xsd("dmfa")
    assert path is not None
    return xmlcheck.check_document(
        data, schema=xmlcheck.load_schema(path), root_element="DmfAOriginal",
        employer_xpath=None, sender_xpath=None, profile=profiles.PROFILES["dmfa"],
        split_forms=split)


@needs_platform
def test_a_big_dmfa_of_many_forms_is_validated_form_by_form(split_spy: list[str]) -> None:
    data = decl.dmfa(((decl.NOSS_TEST, "0"), (decl.NOSS_A, COMPANY)) * 30, workers=30)
    assert len(data) > 2 * 1024 * 1024
    doc = _checked(data)
    assert split_spy == ["split"]
    assert len(doc.forms) == 60 and doc.forms[59].employers == (EmployerRef(COMPANY,
                                                                            decl.NOSS_A),)
    split_spy.clear()
    assert _checked(data, split=False).forms == doc.forms and split_spy == ["stream"]


@needs_platform
def test_a_form_too_big_to_keep_is_validated_as_a_stream(
        split_spy: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xmlcheck, "SPLIT_FORM_BYTES", 1024 * 1024)
    data = decl.dmfa(workers=2500)  # one form of about 3 MiB
    doc = _checked(data)
    assert split_spy == ["too big", "stream"] and len(doc.forms) == 1


@needs_platform
@pytest.mark.parametrize("fault", ["invalid value", "text between forms", "other element"])
def test_a_refusal_by_forms_is_the_tree_paths(split_spy: list[str], fault: str) -> None:
    good = decl.dmfa(((decl.NOSS_TEST, "0"),) * 40, workers=30)
    forms = good.split(b"</Form>")
    if fault == "invalid value":  # the 21st form only
        forms[20] = forms[20].replace(b"<Quarter>20223</Quarter>", b"<Quarter>2022Q</Quarter>")
    elif fault == "text between forms":
        forms[20] = b"stray text" + forms[20]
    else:
        forms[20] = b"<Trailer/>" + forms[20]
    bad = b"</Form>".join(forms)
    with pytest.raises(xmlcheck.XmlRejected) as split_reason:
        _checked(bad)
    assert split_spy == ["split refused"]
    with pytest.raises(xmlcheck.XmlRejected) as plain_reason:
        xmlcheck._check_tree(xmlcheck._parse_checked(bad, keep_comments=True),
                             xmlcheck.load_schema(decl.official_xsd("dmfa") or ""),
                             "DmfAOriginal", None, None, profiles.PROFILES["dmfa"])
    assert str(split_reason.value) == str(plain_reason.value)
    assert "does not follow the XSD" in str(split_reason.value)


def test_a_profile_with_a_sender_xpath_reads_senders_in_big_files_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = decl.dimona([(decl.NOSS_A, None)] * 3).replace(
        b"<Dimona>", f"<Dimona><!-- <SenderId>{COMPANY}</SenderId> -->".encode())
    data = data.replace(b"<TypeForm>SU</TypeForm>",
                        f"<TypeForm>SU</TypeForm><SenderId>{COMPANY}</SenderId>".encode(), 1)
    kwargs: dict[str, Any] = {"schema": None, "root_element": "Dimona", "employer_xpath": None,
                              "sender_xpath": xmlcheck.DEFAULT_SENDER_XPATH,
                              "profile": profiles.PROFILES["dimona"]}
    small = xmlcheck.check_document(data, **kwargs)
    monkeypatch.setattr(xmlcheck, "STREAM_BYTES", 0)
    big = xmlcheck.check_document(data, **kwargs)
    assert small.senders == big.senders == (COMPANY,)
    assert small.forms == big.forms and len(big.forms) == 3


def test_an_employer_named_only_by_a_provisional_onss_number(tmp_path: Path) -> None:
    data = decl.dimona(((decl.NOSS_A, None),)).replace(
        f"<NOSSRegistrationNbr>{decl.NOSS_A}</NOSSRegistrationNbr>".encode(),
        b"<ProvisionalNSSONbr>5000000120</ProvisionalNSSONbr>")
    path = decl.official_xsd("dimona")
    if path is not None:
        assert xmlcheck.load_schema(path).validate(etree.fromstring(data))
    reason = refusal(load(tmp_path, app("dimona"), noss_number=decl.NOSS_A), "dimona", data)
    assert reason == ("form 1 (DIMONA, created 2023-02-06 14:35:01.000) names its employer "
                      "only by ProvisionalNSSONbr 5000000120, which flad cannot tie to this "
                      "channel: give its enterprise number (CompanyID) too")
    with_company = data.replace(b"</ProvisionalNSSONbr>",
                                f"</ProvisionalNSSONbr><CompanyID>{COMPANY}</CompanyID>".encode())
    assert verdict(load(tmp_path / "b", app("dimona")), "dimona", with_company) == ()
