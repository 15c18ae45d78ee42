"""Declarations built like the official documentation examples, following the official XSDs.

The official schemas and examples are not part of flad; the tests use them from
``../shared/platform/`` when that folder is there (``PLATFORM``), and these builders
otherwise. Every builder's output validates against its official schema: see
tests/test_profiles.py. Values are the examples' placeholders where they do not matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

PLATFORM = Path(__file__).resolve().parents[1].parent / "shared" / "platform"
XSD = {"dmfa": "DmfAOriginal_20223.xsd", "dimona": "Dimona_20231.xsd",
       "generic": "GenericXmlDocument_20224.xsd"}
GENERIC_NS = "http://www.smals-mvm.be/xml/ns/systemFlux"

# ONSS numbers that pass CC = 96 - (NNNNNNN x 100 mod 97), as the examples' employers do
NOSS_TEST = "199999934"  # the documentation's test number
NOSS_A = "175110801"
NOSS_B = "127792067"


def noss_number(first7: int) -> str:
    """An ONSS number NNNNNNNCC whose check digits follow the examples' rule."""
    return f"{first7:07d}{96 - (first7 * 100) % 97:02d}"


def official_xsd(profile: str) -> Path | None:
    """The official XSD of a profile from ../shared/platform, or None when it is absent."""
    path = PLATFORM / "xsd" / XSD[profile]
    return path if path.is_file() else None


def _form_head(identification: str, date: str, hour: str, reference: str) -> str:
    return (f"<Form><Identification>{identification}</Identification>"
            f"<FormCreationDate>{date}</FormCreationDate>"
            f"<FormCreationHour>{hour}</FormCreationHour>"
            "<AttestationStatus>0</AttestationStatus><TypeForm>SU</TypeForm>"
            "<Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>1</ReferenceOrigin>"
            f"<ReferenceNbr>{reference}</ReferenceNbr></Reference>")


def dmfa_worker(sequence: int) -> str:
    """One NaturalPerson with one worker record, occupation and contribution."""
    inss = f"{77101500000 + sequence:011d}"
    return (
        f"<NaturalPerson><NaturalPersonSequenceNbr>{sequence:07d}</NaturalPersonSequenceNbr>"
        f"<INSS>{inss}</INSS><NaturalPersonUserReference/>"
        "<WorkerRecord><EmployerClass>001</EmployerClass><WorkerCode>675</WorkerCode>"
        "<NOSSQuarterStartingDate>2022-07-01</NOSSQuarterStartingDate>"
        "<NOSSQuarterEndingDate>2022-09-30</NOSSQuarterEndingDate><Border>0</Border>"
        "<WorkerRecordUserReference/>"
        "<Occupation><OccupationSequenceNbr>01</OccupationSequenceNbr>"
        "<OccupationStartingDate>2005-10-01</OccupationStartingDate>"
        "<JointCommissionNbr>999</JointCommissionNbr><WorkingDaysSystem>500</WorkingDaysSystem>"
        "<ContractType>0</ContractType><RefMeanWorkingHours>3800</RefMeanWorkingHours>"
        "<MeanWorkingHours>3800</MeanWorkingHours><Retired>0</Retired>"
        "<OccupationUserReference/><ActivityCode>87909</ActivityCode>"
        "<LocalUnitID>2000000141</LocalUnitID>"
        "<Service><ServiceSequenceNbr>01</ServiceSequenceNbr><ServiceCode>001</ServiceCode>"
        "<ServiceNbrDays>06600</ServiceNbrDays></Service>"
        "<Remun><RemunSequenceNbr>01</RemunSequenceNbr><RemunCode>001</RemunCode>"
        "<RemunAmount>00000999999</RemunAmount></Remun></Occupation>"
        "<WorkerContribution><ContributionWorkerCode>675</ContributionWorkerCode>"
        "<ContributionType>0</ContributionType>"
        "<ContributionCalculationBasis>00001099998</ContributionCalculationBasis>"
        "<ContributionAmount>000000099999</ContributionAmount></WorkerContribution>"
        "</WorkerRecord></NaturalPerson>"
    )


def dmfa(employers: Sequence[tuple[str, str]] = ((NOSS_TEST, "0"),), *, workers: int = 1,
         quarters: Sequence[str] = ("20223",), reference: str = "DMFA TEST") -> bytes:
    """A DmfAOriginal with one form per (ONSS number, CompanyID) and quarter."""
    forms = []
    for quarter in quarters:
        for noss, company in employers:
            forms.append(
                _form_head("DMFA", "2022-08-11", "08:45:00.000", reference)
                + f"<EmployerDeclaration><Quarter>{quarter}</Quarter>"
                f"<NOSSRegistrationNbr>{noss}</NOSSRegistrationNbr><Trusteeship>0</Trusteeship>"
                f"<CompanyID>{company}</CompanyID><NetOwedAmount>00000000009999</NetOwedAmount>"
                + "".join(dmfa_worker(i) for i in range(1, workers + 1))
                + "</EmployerDeclaration></Form>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<DmfAOriginal>'
            + "".join(forms) + "</DmfAOriginal>\n").encode()


def dimona(employers: Sequence[tuple[str | None, str | None]] = ((NOSS_A, None),)) -> bytes:
    """A Dimona with one DimonaIn form per employer (ONSS number and/or CompanyID)."""
    forms = []
    for i, (noss, company) in enumerate(employers, start=1):
        ids = ((f"<NOSSRegistrationNbr>{noss}</NOSSRegistrationNbr>" if noss else "")
               + (f"<CompanyID>{company}</CompanyID>" if company else ""))
        forms.append(
            _form_head("DIMONA", "2023-02-06", f"14:35:{i % 60:02d}.000", f"ref {i}")
            + "<DimonaIn><StartingDate>2023-02-08</StartingDate>"
            f"<EndingDate>2023-02-08</EndingDate><EmployerId>{ids}</EmployerId>"
            "<NaturalPerson><INSS>01410199955</INSS></NaturalPerson>"
            "<DimonaFeatures><JointCommissionNbr>XXX</JointCommissionNbr>"
            "<WorkerType>TRI</WorkerType></DimonaFeatures></DimonaIn></Form>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Dimona>' + "".join(forms)
            + "</Dimona>\n").encode()


def generic(forms: Sequence[Sequence[tuple[str, str]]]) -> bytes:
    """A GenericXmlDocument (namespaced) with one form per list of (ONSS, CompanyID)."""
    out = []
    for i, employers in enumerate(forms, start=1):
        ids = "".join(f"<EmployerId><NOSSRegistrationNbr>{noss}</NOSSRegistrationNbr>"
                      f"<CompanyID>{company}</CompanyID></EmployerId>"
                      for noss, company in employers)
        out.append(
            f"<Form><Identification>ECOUDRQ</Identification>"
            f"<FormCreationDate>2025-11-16</FormCreationDate>"
            f"<FormCreationHour>11:56:{i % 60:02d}.781</FormCreationHour>"
            "<AttestationStatus>0</AttestationStatus><TypeForm>RE</TypeForm>"
            "<Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>1</ReferenceOrigin>"
            f"<ReferenceNbr>99-9998-999999998-{i:02d}</ReferenceNbr></Reference>"
            f"<ReferenceData><Quarter>20171</Quarter>{ids}</ReferenceData></Form>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<GenericXmlDocument xmlns="{GENERIC_NS}">'
            + "".join(out) + "</GenericXmlDocument>\n").encode()
