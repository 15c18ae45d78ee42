"""How long each certificate a channel depends on stays valid, said before it is too late.

A signing certificate that expires stops every production file; the platform answers
with a negative receipt, or flad refuses to sign. `flad check` run by hand saw it; the
service, `flad status` and the metrics say it too, from `cert_warn_days` before the end,
louder in the last week.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from flad import signing
from flad.config import ChannelConfig, Config

#: From this many days before the end a warning becomes an error, each day.
URGENT_DAYS = 7


@dataclass(frozen=True)
class Lifetime:
    channel: str
    role: str  # "signing" or "reply_trust"
    subject: str
    not_after: datetime.datetime
    days_left: float

    @property
    def expired(self) -> bool:
        return self.days_left < 0

    def text(self) -> str:
        end = f"{self.not_after:%Y-%m-%d %H:%M} UTC"
        if self.expired and self.role == "signing":
            return (f"channel {self.channel}: the {self.role} certificate {self.subject} "
                    f"EXPIRED on {end}: nothing is signed, the channel's files wait; put "
                    "a valid certificate in place and reload flad")
        if self.expired:
            return (f"channel {self.channel}: the {self.role} certificate {self.subject} "
                    f"EXPIRED on {end}")
        return (f"channel {self.channel}: the {self.role} certificate {self.subject} expires "
                f"on {end}, in {self.days_left:.0f} day(s): renew it")


def of_certificate(channel: str, role: str, cert: x509.Certificate,
                   now: datetime.datetime) -> Lifetime:
    not_after = cert.not_valid_after_utc
    return Lifetime(channel, role, cert.subject.rfc4514_string(), not_after,
                    (not_after - now).total_seconds() / 86400)


def of_channel(channel: ChannelConfig, load_signer: Callable[[ChannelConfig], object],
               now: datetime.datetime) -> list[Lifetime]:
    """The signing certificate and the reply_trust certificates of one channel.

    A PEM certificate is read on its own; only a PKCS#12 file needs `load_signer`. A
    certificate that cannot be read is left out: `flad check` names that problem.
    """
    out: list[Lifetime] = []
    certificate: object = None
    sc = channel.signing
    try:
        if sc is not None and sc.certificate is not None:
            # the certificate alone: no private key is opened just to read a date
            certificate = signing.load_certificates(sc.certificate)[0]
        elif sc is not None:  # a PKCS#12 file holds it with the key
            certificate = getattr(load_signer(channel), "certificate", None)
    except (signing.SigningError, OSError, IndexError):
        certificate = None
    if isinstance(certificate, x509.Certificate):
        out.append(of_certificate(channel.name, "signing", certificate, now))
    if channel.reply_trust is not None:
        try:
            trusted = signing.load_certificates(Path(channel.reply_trust))
        except (signing.SigningError, OSError):
            trusted = []
        out += [of_certificate(channel.name, "reply_trust", c, now) for c in trusted]
    return out


def of_config(config: Config, load_signer: Callable[[ChannelConfig], object],
              now: datetime.datetime | None = None) -> list[Lifetime]:
    now = now or datetime.datetime.now(datetime.UTC)
    return [life for ch in config.channels for life in of_channel(ch, load_signer, now)]


def notices(lifetimes: Sequence[Lifetime], warn_days: int) -> list[tuple[str, Lifetime]]:
    """(level, lifetime) for each certificate to speak of: "error" from URGENT_DAYS
    before the end (and after it), "warning" from `warn_days`."""
    out: list[tuple[str, Lifetime]] = []
    for life in lifetimes:
        if life.days_left <= URGENT_DAYS:
            out.append(("error", life))
        elif life.days_left <= warn_days:
            out.append(("warning", life))
    return out
