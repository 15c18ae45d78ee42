"""The FS kept in the spool beside each signed file, and the checks before it is reused.

The FS is made while the file is checked and written next to the spooled FI without a
sync: the upload takes it from memory. Whenever it is read back instead (after a
restart, or when the content store was full) it is verified first, and made again
when torn; before a sent file is archived after a crash, the same check keeps a
whole FS in `sent/`.
"""

from __future__ import annotations

from pathlib import Path

from flad import durable, logs, signing, spool
from flad.config import ChannelConfig
from flad.journal import Submission


class SpoolSignatures:
    """Makes, keeps and checks the FS of one channel's spooled files."""

    def __init__(self, channel: ChannelConfig, signer: signing.Signer | None) -> None:
        self.channel = channel
        self.signer = signer
        self.log = logs.get("flad.channel").bind(channel=channel.name)

    def make(self, data: bytes) -> bytes:
        assert self.signer is not None
        return signing.make_fs(data, self.signer, self.channel.fs_line_format)

    def keep(self, sub: Submission, fs: bytes) -> None:
        """Written next to the spooled FI, not synced: `ensure` checks it before reuse."""
        durable.write_file(spool.fs_path(Path(sub.spool_path)), fs, 0o600, sync=False)

    def ensure(self, sub: Submission, data: bytes | None) -> bytes:
        """The FS kept in the spool if it still signs the FI, else made again.

        Used when the FS is not in memory: the spooled one was written without a sync,
        so it is verified before it is trusted. Without a signer (signing removed from
        the configuration since), the spooled one is all there is.
        """
        path = spool.fs_path(Path(sub.spool_path))
        if data is None:  # bytes from the spool: signed only if they are the checked ones
            data = spool.read_verified(sub, 1 << 62)
        try:
            fs = path.read_bytes()
            signing.verify_fs(data, fs, certificate=(
                self.signer.certificate if self.signer is not None else None))
            return fs
        except (FileNotFoundError, signing.SignatureInvalid) as exc:
            if self.signer is None:
                raise signing.SigningError(
                    f"{sub.fs_name}: no valid signature kept in the spool ({exc}) and no "
                    "signing certificate configured any more") from None
        fs = self.make(data)
        durable.write_file(path, fs, 0o600, sync=False)
        self.log.info("signature_made_again", submission=sub.id, fs_name=sub.fs_name)
        return fs

    def keep_whole(self, sub: Submission) -> None:
        """Before a file sent before a crash is archived: its spooled FS was never synced,
        so make sure the one kept signs the FI (a torn one is made again)."""
        if not sub.fs_name or self.signer is None:
            return
        try:
            self.ensure(sub, None)
        except (OSError, signing.SigningError, spool.SpoolChanged) as exc:  # GO is out: archive
            self.log.error("signature_check_failed", submission=sub.id,
                           fs_name=sub.fs_name, error=str(exc))
