"""Built-in application profiles: where each official layout keeps its forms and employers.

The channel carries DmfA, DIMONA and the generic documents (the FLA has ended, see
README). Their official XSDs (``DmfAOriginal_20223.xsd``, ``Dimona_20231.xsd``,
``GenericXmlDocument_20224.xsd``) all hold a root with one or more ``Form``, each
form naming its employer by ONSS registration number (``NOSSRegistrationNbr``)
and/or enterprise number (``CompanyID``) inside one element per employer. A profile
says where, so that every form and every employer of a file is checked; a whole-file
XPath cannot tell one form from the next, nor a ``CompanyID`` from the
``NOSSRegistrationNbr`` beside it.

flad ships no official schema: the operator points ``xsd`` at the copy downloaded
from the portal; a profile only names the schema it was written from, for `flad
check`. The module is pure: values only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROFILES", "Profile", "profile_named"]


@dataclass(frozen=True)
class Profile:
    """Where one application's files keep their forms and the numbers of their employers."""

    name: str
    """The value of ``profile`` in ``[[channel.application]]``."""
    title: str
    schema_file: str
    """The official XSD the profile follows (for messages: flad does not ship it)."""
    root_element: str
    namespace: str | None
    """The root's namespace in the official schema (for messages; checks use local names)."""
    code: str | None
    """The application code of file names, where the layout fixes it; else configuration."""
    employer_paths: tuple[tuple[str, ...], ...]
    """Local names from a form down to each element that names one employer."""
    form_element: str = "Form"
    enterprise_element: str = "CompanyID"
    noss_element: str = "NOSSRegistrationNbr"
    other_elements: tuple[str, ...] = ()
    """Other numbers that may name the employer instead (a provisional ONSS number):
    flad cannot tie them to a channel, but says so rather than "no number"."""

    def expects(self) -> str:
        """`flad check`'s line: which schema and root the profile expects."""
        root = f"{{{self.namespace}}}{self.root_element}" if self.namespace else self.root_element
        return f"profile {self.name!r} ({self.title}) expects {self.schema_file}, root {root}"


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            name="dmfa", title="DmfA, quarterly declaration",
            schema_file="DmfAOriginal_20223.xsd", root_element="DmfAOriginal",
            namespace=None, code="DMFA",
            # Form/EmployerDeclaration holds NOSSRegistrationNbr, then CompanyID (0: not known)
            employer_paths=(("EmployerDeclaration",),),
        ),
        Profile(
            name="dimona", title="DIMONA, immediate declaration of employment",
            schema_file="Dimona_20231.xsd", root_element="Dimona", namespace=None, code=None,
            # each kind of declaration has an optional EmployerId (NOSSRegistrationNbr and/or
            # CompanyID); a DailyRegistrationDeclaration names no employer
            employer_paths=tuple((kind, "EmployerId") for kind in (
                "DimonaIn", "DimonaOut", "DimonaUpdate", "DimonaCancel")),
            other_elements=("ProvisionalNSSONbr", "NOSSLPARegistrationNbr"),
        ),
        Profile(
            name="generic", title="GenericXmlDocument",
            schema_file="GenericXmlDocument_20224.xsd", root_element="GenericXmlDocument",
            namespace="http://www.smals-mvm.be/xml/ns/systemFlux", code=None,
            # Form/ReferenceData/EmployerId (0..2); its HandledEmployerId children are not
            # the employer the form is sent for
            employer_paths=(("ReferenceData", "EmployerId"),),
            other_elements=("ProvisionalNSSONbr", "NOSSLPARegistrationNbr"),
        ),
    )
}


def profile_named(name: str) -> Profile | None:
    """The built-in profile of that name, or None."""
    return PROFILES.get(name)
