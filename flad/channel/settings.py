"""What a channel's configuration becomes for its parts: SFTP settings and its signer."""

from __future__ import annotations

from flad import signing
from flad.config import ChannelConfig
from flad.remote import ProxySettings, SftpSettings


def sftp_settings(channel: ChannelConfig) -> SftpSettings:
    s = channel.sftp
    return SftpSettings(
        host=s.host, port=s.port, username=s.username, private_key=s.private_key,
        passphrase=s.passphrase, known_hosts=s.known_hosts, legacy_ssh_rsa=s.legacy_ssh_rsa,
        connect_timeout=s.connect_timeout, request_timeout=s.request_timeout,
        keepalive_seconds=s.keepalive_seconds, passphrase_source=s.passphrase_source,
        proxy=ProxySettings(s.proxy, s.proxy_credentials) if s.proxy else None)


def load_signer(channel: ChannelConfig) -> signing.Signer | None:
    """The channel's signer, or None when it signs nothing; SigningError when broken."""
    sc = channel.signing
    if sc is None:
        return None
    return signing.load_signer(sc.certificate, sc.private_key, sc.pkcs12, sc.passphrase,
                               sc.passphrase_source)
