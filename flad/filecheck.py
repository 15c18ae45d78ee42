"""What flad checks about a file's content before it gets a name.

A module of its own, with no transport and no journal: `flad check` and the channel's
check stage use the same checker, and `flad check` imports nothing it does not need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from flad import identity, xmlcheck
from flad.config import ApplicationConfig, ChannelConfig


class Rejected(Exception):
    """The file itself is wrong: it goes back to the payroll side with this reason."""


@dataclass
class FileChecker:
    """Everything flad checks about a file's content before it gets a name.

    The XSDs are compiled once, when the checker is made: a broken XSD is a
    configuration problem that stops the start-up, never a reason to refuse files.
    """

    channel: ChannelConfig
    _schemas: dict[str, etree.XMLSchema | None] = field(default_factory=dict)
    _split: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for app in self.channel.applications:
            self._schemas[app.name] = xmlcheck.load_schema(app.xsd) if app.xsd else None
            # big files of a profile are validated form by form where the XSD allows it
            self._split[app.name] = bool(app.xsd and app.profile and app.employer_xpath is None
                                         and xmlcheck.forms_validate_alone(app.xsd, app.profile))

    def schema(self, app: ApplicationConfig) -> etree.XMLSchema | None:
        return self._schemas.get(app.name)

    def check(self, app: ApplicationConfig, environment: str, data: bytes) -> tuple[str, ...]:
        """Raises Rejected with a one-line reason; returns warnings when accepted."""
        if environment == "production" and not self.channel.production:
            raise Rejected("this channel may not send production files (production = false "
                           "in flad's configuration): drop the file under test/ instead")
        try:
            doc = xmlcheck.check_document(
                data, schema=self.schema(app), root_element=app.root_element,
                employer_xpath=app.employer_xpath, sender_xpath=app.sender_xpath,
                max_bytes=app.max_file_bytes, profile=app.profile,
                split_forms=self._split.get(app.name, False))
        except xmlcheck.XmlRejected as exc:
            raise Rejected(str(exc)) from None
        verdict = identity.check_forms(
            quality=self.channel.quality, company_id=self.channel.company_id,
            noss_number=self.channel.noss_number, forms=doc.forms, senders=doc.senders,
            mandates=self.channel.mandates)
        if not verdict.ok:
            raise Rejected(verdict.reason or "the enterprise numbers in the file are not "
                           "allowed on this channel")
        return verdict.warnings
