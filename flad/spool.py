"""Where flad keeps the files it took: the spool, and the sent and rejected folders.

Every path of a taken file is named here, once: the spool file of a drop (a random
prefix, then the drop name), its FS kept beside it, the folder where it is archived
once sent, and the folder where it goes back to the payroll side with its reason.
The one rejection routine is here too: the claimer, the channel's stages and
`flad resend` all go through it, so a refusal is always journaled first and moved
second.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from flad import durable, logs
from flad.config import ChannelConfig
from flad.journal import Journal, Submission

REASON_SUFFIX = ".reason.txt"


def spool_root(state_dir: Path) -> Path:
    return state_dir / "spool"


def spool_dir(state_dir: Path, channel: str, environment: str, application: str) -> Path:
    """The spool folder of one drop folder: on the state folder, never in the outbox."""
    return spool_root(state_dir) / channel / environment / application


def spool_file(folder: Path, drop_name: str) -> Path:
    """A fresh spool name for a drop: a random prefix keeps two drops of one name apart."""
    return folder / f"{uuid.uuid4().hex[:12]}_{drop_name}"


def drop_name(spool_path: Path) -> str:
    """The drop name a spool file was taken under (the inverse of `spool_file`)."""
    name = spool_path.name
    return name.split("_", 1)[1] if "_" in name else name


def fs_path(spool_path: Path) -> Path:
    """The FS kept next to the spooled FI, hidden: spool recovery never takes it for a drop.

    Named before the submission has a number: the FS is made while the file is checked.
    """
    return spool_path.with_name(f".{spool_path.name}.fs")


def sent_folder(channel: ChannelConfig, environment: str) -> Path:
    return channel.outbox / "sent" / environment


def rejected_folder(channel: ChannelConfig, environment: str, application: str) -> Path:
    return channel.outbox / "rejected" / environment / application


def reason_path(rejected: Path) -> Path:
    """The one-line reason written next to a rejected file."""
    return rejected.with_name(rejected.name + REASON_SUFFIX)


def one_line(reason: str) -> str:
    return " ".join(reason.split())


def reject(journal: Journal, channel: ChannelConfig, sub: Submission, reason: str) -> None:
    """Journal the refusal with its reason, then move the file next to it.

    The journal comes first: a rejected folder that cannot be written must not leave
    the file `received`, to be checked (and refused) again at every turn. The move is
    finished at the next start (`finish_rejection`).
    """
    log = logs.get("flad.spool").bind(channel=channel.name)
    reason = one_line(reason)
    target_dir = rejected_folder(channel, sub.environment, sub.application)
    target = durable.free_name(target_dir, sub.drop_name, f"{sub.id}")
    journal.mark_rejected(sub.id, reason, str(target))
    log.warning("file_rejected", submission=sub.id, drop_name=sub.drop_name, reason=reason,
                rejected_path=str(target))
    fresh = journal.get(sub.id)
    assert fresh is not None
    try:
        finish_rejection(fresh)
    except OSError as exc:
        log.error("rejected_file_not_moved", submission=sub.id, drop_name=sub.drop_name,
                  error=exc.strerror or str(exc), spool_path=sub.spool_path,
                  action="it stays in the spool; flad moves it at its next start")


def finish_rejection(sub: Submission) -> None:
    """Move a spooled file next to its reason; idempotent (runs again after a crash)."""
    assert sub.rejected_path
    target = Path(sub.rejected_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    durable.write_file(reason_path(target), f"{sub.error}\n".encode())
    spool = Path(sub.spool_path)
    if spool.exists() and spool != target:
        with contextlib.suppress(FileNotFoundError):  # signed, then found a duplicate
            fs_path(spool).unlink()
        durable.move(spool, target)


def reject_entry(journal: Journal, channel: ChannelConfig, environment: str,
                 application: str, path: Path, reason: str) -> Path | None:
    """Refuse an outbox entry that is not a regular file, without ever opening it.

    Journal first, as `reject`: the row names the entry where it lies and where it
    goes; then one rename (which never follows a link) moves it there. When the move
    fails the entry stays, and the next look at the folder finishes the move of the
    same row instead of refusing it again. Returns the rejected path once moved;
    raises OSError (FileNotFoundError when it vanished) when it was not.
    """
    reason = one_line(reason)
    earlier = journal.by_spool_path(str(path))
    if (earlier is not None and earlier.rejected_path
            and not os.path.lexists(earlier.rejected_path)):
        target = Path(earlier.rejected_path)  # refused before, the move still to do
    else:
        target_dir = rejected_folder(channel, environment, application)
        target = durable.free_name(target_dir, path.name, uuid.uuid4().hex[:8])
        sub_id = journal.add_received(
            channel=channel.name, application=application, environment=environment,
            drop_name=path.name, spool_path=str(path), sha256="", size=0)
        journal.mark_rejected(sub_id, reason, str(target))
        logs.get("flad.spool").warning("file_rejected", channel=channel.name,
                                       submission=sub_id, drop_name=path.name,
                                       environment=environment, application=application,
                                       reason=reason, rejected_path=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, target)  # a rename never opens or follows the entry
    durable.write_file(reason_path(target), (reason + "\n").encode())
    return target


def take_back(state_dir: Path, sub: Submission) -> Path:
    """`flad resend`: move a refused or failed file back into the spool, reason removed.

    Returns its new spool path, for the journal to queue it again.
    """
    source = Path(sub.rejected_path or sub.spool_path)
    target = spool_file(spool_dir(state_dir, sub.channel, sub.environment, sub.application),
                        sub.drop_name)
    if source != target:
        durable.move(source, target)
        reason_path(source).unlink(missing_ok=True)
    return target
