"""Start-up recovery: the rejections and archives that a crash left half done.

Both are local moves, from the spool to `rejected/` or `sent/`: recovery opens no
connection, only the signature check that keeps a whole FS in `sent/`. It runs once
before the workers start, after the claimer has journaled what a crash left in the
spool.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flad import journal, logs, signing, spool
from flad.channel.archive import archive
from flad.channel.signatures import SpoolSignatures
from flad.config import Config
from flad.journal import Journal


def finish_interrupted(config: Config, journal_: Journal,
                       signers: Mapping[str, signing.Signer | None]) -> int:
    """Finish every half-done rejection and archive; returns how many were finished.

    Only files in the spool are moved: an entry refused where it lay in the outbox (a
    link, a pipe) is finished by the claimer when it looks at that folder again, so a
    new file dropped under the same name is never taken for it.
    """
    log = logs.get("flad.channel")
    legacy = spool.legacy_spool_root(config.daemon.state_dir)
    signatures: dict[str, SpoolSignatures] = {}
    done = 0
    for sub in journal_.submissions(states=(journal.REJECTED, journal.SENT)):
        channel = config.channel(sub.channel)
        spooled = Path(sub.spool_path)
        if (channel is None or not spooled.exists() or not (
                spooled.is_relative_to(legacy)
                or spooled.is_relative_to(spool.spool_root(channel)))):
            continue
        if channel.name not in signatures:
            signatures[channel.name] = SpoolSignatures(channel, signers.get(channel.name))
        try:
            if sub.state == journal.REJECTED and sub.rejected_path:
                spool.finish_rejection(sub)
            elif sub.state == journal.SENT:
                archive(channel, signatures[channel.name], sub, recovering=True)
            done += 1
        except OSError as exc:
            log.error("recovery_failed", channel=sub.channel, submission=sub.id,
                      error=str(exc))
    return done
