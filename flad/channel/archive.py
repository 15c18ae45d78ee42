"""The last step of a sent file: FI and FS kept under their sent names in `sent/`."""

from __future__ import annotations

from pathlib import Path

from flad import spool
from flad.channel.signatures import SpoolSignatures
from flad.config import ChannelConfig
from flad.journal import Submission


def archive(channel: ChannelConfig, signatures: SpoolSignatures, sub: Submission, *,
            recovering: bool = False) -> None:
    """Move FI and FS out of the spool; idempotent (start-up runs it again after a crash).

    Not synced file by file: the journal already says `sent`, and a move lost in a
    crash leaves the file in the spool, where start-up archives it again.
    """
    spooled = Path(sub.spool_path)
    if not spooled.exists():
        return
    target_dir = spool.sent_folder(channel, sub.environment)
    assert sub.fi_name
    if recovering:
        signatures.keep_whole(sub)
    fs = spool.fs_path(spooled)
    # by descriptor (sent/ is in the shared outbox: never through a link), and flad's
    # own files there, readable by the drop group, written by flad alone
    if sub.fs_name and fs.exists():
        spool.move_file(fs, target_dir / sub.fs_name, sync=False)
    spool.move_file(spooled, target_dir / sub.fi_name, sync=False)
