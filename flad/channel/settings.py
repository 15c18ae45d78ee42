"""What a channel's configuration becomes for its parts: its signer.

(Its SFTP settings need no translation: `ChannelConfig.sftp` is the `SftpSettings` the
remote side connects with.)
"""

from __future__ import annotations

from flad import signing
from flad.config import ChannelConfig


def load_signer(channel: ChannelConfig) -> signing.Signer | None:
    """The channel's signer, or None when it signs nothing; SigningError when broken."""
    sc = channel.signing
    if sc is None:
        return None
    return signing.load_signer(sc.certificate, sc.private_key, sc.pkcs12, sc.passphrase,
                               sc.passphrase_source)
