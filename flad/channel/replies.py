"""The reply side of a channel: OUT/OUTTEST mirrored into the inbox, exactly once.

A set (FO/CO data, their FS, and the GO that completes it) is taken only when its GO
is on the server; it is downloaded into a hidden folder of the inbox, checked, and
renamed into place data first and GO last, so that payroll software can use the
platform's own rule ("a set is there when its GO is"). Only once the set is durable
and journaled does anything leave the server. Remote names that do not follow the
grammar are never used as local paths.
"""

from __future__ import annotations

import datetime
import mmap
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cryptography import x509

from flad import (
    durable,
    faults,
    filemodes,
    logs,
    naming,
    replyparse,
    replyunpack,
    safedir,
    signing,
)
from flad.config import ChannelConfig
from flad.errorlabels import load_error_labels
from flad.journal import Journal, SentFormRow, Submission
from flad.platform import OPTIONAL_FOLDERS, REMOTE_OUT
from flad.remote import Remote, RemoteNotFound, TransportError
from flad.remote.protocol import Downloaded
from flad.replyparse import Reply, ReplyForm

DATA_TYPES = ("FO", "CO")
INCOMING = ".incoming"
#: Reply sets fetched, delivered and removed together: enough to fill a long link's
#: round trips (a slice costs about four whatever its size: 50 sets fit one window of
#: open files), few enough that the first set is delivered early and that a file
#: dropped meanwhile waits for a step of a slice at most.
SETS_TOGETHER = 50
#: A receipt or notification larger than this is delivered but not parsed: its tree
#: would take several times its size in memory (real ones are kilobytes).
MAX_READ_BYTES = 32 * 1024 * 1024
#: A detached signature is a few kilobytes; an FS larger than this is refused unread.
MAX_FS_BYTES = 1024 * 1024
#: which result of several forms speaks for a submission: the one a person must see first
_RESULT_PRIORITY = (0, 4, 2, 3, 1)


def combined_result(forms: list[ReplyForm]) -> int | None:
    """One result for the forms of one submission: NOK first, then timeout, proposal, ..."""
    results = {f.result for f in forms if f.result is not None}
    for code in _RESULT_PRIORITY:
        if code in results:
            return code
    return min(results) if results else None


@dataclass
class ReplyPoller:
    """Fetches complete reply sets of one channel; `poll` is safe to run again anytime."""

    channel: ChannelConfig
    journal: Journal
    transport: Remote
    clock: Callable[[], float] = time.time
    #: the platform's list of error codes (`[daemon] error_codes`), for their labels
    error_codes: Path | None = None
    #: sets that could not be delivered (untrusted, or a local error); `flad replies`
    #: exits non-zero when there were any
    failures: int = 0
    #: called between slices of a long poll (the worker uploads what is ready), so a
    #: file dropped meanwhile never waits for a whole backlog of replies
    between_slices: Callable[[], None] | None = None
    #: free space kept on the inbox's and the state folder's file systems
    #: (`[daemon] min_free_bytes`); the state folder is left out when None
    min_free_bytes: int = 1024**3
    state_dir: Path | None = None
    #: sets the bounds left on the server in the last poll (too large, space low)
    held: int = 0
    _warned: set[str] = field(default_factory=set)
    _trust: list[x509.Certificate] | None = None

    def __post_init__(self) -> None:
        self.log = logs.get("flad.replies").bind(channel=self.channel.name)
        if self.channel.reply_trust is not None:
            self._trust = signing.load_certificates(self.channel.reply_trust)
        self._labels, problem = load_error_labels(self.error_codes)
        if problem is not None:
            self.log.warning("error_codes_unreadable", reason=problem,
                             hint="error codes are shown without their label")

    def poll(self) -> int:
        """One pass over OUT/OUTTEST; returns the number of sets delivered."""
        delivered = 0
        self.held = 0
        self.transport.ensure_connected()
        environments = self.channel.environments()
        folders = [REMOTE_OUT[e] for e in environments]
        listings = self.transport.listdirs(folders)  # one round of requests for all
        for environment, folder, listing in zip(environments, folders, listings,
                                                strict=True):
            if isinstance(listing, RemoteNotFound) and folder in OPTIONAL_FOLDERS:
                continue  # a server without OUTTEST-S: no error for the other environments
            if isinstance(listing, TransportError):
                raise listing
            delivered += self._poll_folder(environment, folder, dict(listing))
        return delivered

    def _poll_folder(self, environment: str, folder: str, listing: dict[str, int]) -> int:
        sets: dict[str, dict[str, naming.FileName]] = defaultdict(dict)
        # a reply dated later than today is refused (ACRF-111); a day of slack for the
        # platform's time zone (Brussels) against this machine's
        latest = datetime.date.today() + datetime.timedelta(days=1)
        for name in listing:
            try:
                parsed = naming.parse(name, today=latest)
            except naming.InvalidName as exc:
                if name not in self._warned:
                    self._warned.add(name)
                    self.log.warning("reply_name_skipped", folder=folder, reason=str(exc))
                continue
            sets[parsed.set_key][name] = parsed
        complete = {k: v for k, v in sets.items()
                    if any(p.type == "GO" for p in v.values())}
        if self.channel.remove_after_download:
            self._finish_removals({k: v for k, v in sets.items() if k not in complete},
                                  folder)
        # receipts first: a notification is tied to its submission through the receipt
        order = sorted(complete, key=lambda k: (k.split(".")[0] != "ACRF", k))
        count = 0
        held: dict[str, tuple[str, str, int]] = {}
        for start in range(0, len(order), SETS_TOGETHER):
            if start:
                self._let_uploads_through()
            count += self._poll_sets(environment, folder, order[start:start + SETS_TOGETHER],
                                     complete, listing, held)
        self.journal.set_replies_held(self.channel.name, folder, held)
        self.held += len(held)
        return count

    def _poll_sets(self, environment: str, folder: str, keys: list[str],
                   complete: dict[str, dict[str, naming.FileName]],
                   listing: dict[str, int], held: dict[str, tuple[str, str, int]]) -> int:
        """A slice of the listing's sets: downloaded together, checked one by one, then
        journaled, moved into the inbox and removed together.

        Per slice, not per set: one journal commit for `delivering`, one sync of the
        inbox before the GOs and one after, one commit for `delivered`, one for
        `removed`. On a long link a backlog must not be paid for in local syncs; the
        promises are the set's own (whole sets, GO last, removed once delivered).
        """
        states = {k: self.journal.reply_set_state(self.channel.name, folder, k) for k in keys}
        started = time.monotonic()
        allowed = self._within_bounds(folder, [k for k in keys if states[k] is None],
                                      complete, listing, held)
        fetched = self._fetch_together(folder, allowed, complete, listing)
        if fetched:
            self._let_uploads_through()  # the local work of the slice is next
        for set_key in keys:
            if states[set_key] == "removed":
                self._seen_before(folder, set_key, complete[set_key])
        # absent and fetched: checked and staged; `delivering`: a crash interrupted its
        # move into the inbox, finished from what is still staged, never downloaded again
        staged = self._stage(folder, [k for k in keys if states[k] is None and k in fetched],
                             complete, listing, started, fetched)
        if staged:
            with self.journal.batch():  # correlation is idempotent: a crash repeats it
                for set_key in staged:
                    self._correlate(folder, set_key, self._staging(folder),
                                    complete[set_key])
                    self.journal.record_reply_set(self.channel.name, folder, set_key,
                                                  _delivery_order(complete[set_key]),
                                                  "delivering")
            for _ in staged:
                faults.point("before_reply_rename")
        moving = [k for k in keys if k in staged or states[k] == "delivering"]
        moved = self._move_into_inbox(environment, folder, moving, complete)
        if moved:
            with self.journal.batch():
                for set_key in moved:
                    self.journal.record_reply_set(self.channel.name, folder, set_key,
                                                  _delivery_order(complete[set_key]),
                                                  "delivered")
            for set_key in moved:
                self.log.info("reply_delivered", folder=folder, set_key=set_key,
                              files=_delivery_order(complete[set_key]))
                faults.point("after_reply_delivery")
        if self.channel.remove_after_download:
            if moved:
                self._let_uploads_through()
            self._remove_together(folder, {k: complete[k] for k in keys
                                           if k in moved or states[k] == "delivered"})
        return len(moved)

    def _let_uploads_through(self) -> None:
        """A file dropped during a long poll waits for a step of a slice, not for the
        backlog: the worker uploads what is ready (the `between_slices` hook)."""
        if self.between_slices is not None:
            self.between_slices()

    def _within_bounds(self, folder: str, keys: list[str],
                       complete: dict[str, dict[str, naming.FileName]],
                       sizes: dict[str, int],
                       held: dict[str, tuple[str, str, int]]) -> list[str]:
        """The new sets that may be fetched: no file larger than `max_reply_bytes` (the
        listing's size), and the inbox's and the state folder's file systems keep
        `min_free_bytes` free after them. The others stay on the server, each said once
        in the log and listed by `flad status` until it is fetched or gone."""
        limit = self.channel.max_reply_bytes
        room, where = self._room()
        allowed: list[str] = []
        for set_key in keys:
            names = sorted(complete[set_key])
            size = sum(sizes[n] for n in names)
            big = [n for n in names if sizes[n] > limit]
            if big:
                self._hold(folder, set_key, size, held, "reply_too_large",
                           f"{big[0]} is {sizes[big[0]]} bytes, more than max_reply_bytes "
                           f"({limit})",
                           "raise max_reply_bytes for this channel, or fetch the set by hand")
            elif room is not None and size > room:
                self._hold(folder, set_key, size, held, "reply_space_low",
                           f"its {size} bytes would leave less than min_free_bytes "
                           f"({self.min_free_bytes}) free on {where}",
                           "free space there (or lower min_free_bytes); it is fetched at "
                           "a later poll")
            else:
                if room is not None:
                    room -= size
                allowed.append(set_key)
        return allowed

    def _room(self) -> tuple[int | None, str]:
        """Bytes that may still be written before a file system crosses the floor, and
        which one is the tightest; None when no file system can be asked."""
        room: int | None = None
        where = ""
        for path in (self.channel.inbox, self.state_dir):
            while path is not None and not path.exists() and path != path.parent:
                path = path.parent
            if path is None:
                continue
            try:
                st = os.statvfs(path)
            except OSError:
                continue
            free = st.f_bavail * st.f_frsize - self.min_free_bytes
            if room is None or free < room:
                room, where = free, str(path)
        return room, where

    def _hold(self, folder: str, set_key: str, size: int,
              held: dict[str, tuple[str, str, int]], event: str, detail: str,
              hint: str) -> None:
        held[set_key] = (event, detail, size)
        if f"{event}:{folder}/{set_key}" in self._warned:
            return
        self._warned.add(f"{event}:{folder}/{set_key}")
        self.log.error(event, folder=folder, set_key=set_key, size=size, reason=detail,
                       hint=f"left on the server; {hint}")

    def _seen_before(self, folder: str, set_key: str,
                     files: dict[str, naming.FileName]) -> None:
        """Listed again before the removal became visible, or a new set under a name
        seen before (a sandbox restarted with a fresh root numbers its replies from 1
        again). Never delivered twice; said once, not in silence."""
        if f"seen:{folder}/{set_key}" in self._warned:
            return
        self._warned.add(f"seen:{folder}/{set_key}")
        self.log.warning(
            "reply_set_seen_before", folder=folder, set_key=set_key, files=sorted(files),
            hint="a set of this name was delivered and removed before; it is left on the "
                 "server and not delivered again. If it is a new reply under a reused "
                 "name, fetch it by hand")

    def _stage(self, folder: str, keys: list[str],
               complete: dict[str, dict[str, naming.FileName]], sizes: dict[str, int],
               started: float, digests: dict[str, dict[str, str]]) -> list[str]:
        """The fetched sets made durable in their staging folders, checked and unpacked;
        the keys of those that may be delivered, in order."""
        ready: list[str] = []
        bulk = durable.can_sync_filesystem()
        if keys and bulk:
            try:  # every file and staging folder of the slice, in one call
                durable.sync_filesystem(self.channel.inbox / INCOMING)
            except OSError as exc:
                for set_key in keys:
                    self._discard(folder, set_key, complete[set_key])
                    self._delivery_failed(folder, set_key, exc, self.channel.inbox / INCOMING)
                return []
        staging = self._staging(folder)
        for set_key in keys:
            files = complete[set_key]
            try:
                if not self._download(folder, set_key, files, sizes, staging, synced=bulk):
                    continue
                self._unpack(folder, set_key, staging, files)
            except OSError as exc:
                self._discard(folder, set_key, files)
                self._delivery_failed(folder, set_key, exc, staging)
                continue
            self.log.info("reply_downloaded", folder=folder, set_key=set_key,
                          files=_delivery_order(files), sha256=digests[set_key],
                          duration_ms=int((time.monotonic() - started) * 1000))
            ready.append(set_key)
        return ready

    def _move_into_inbox(self, environment: str, folder: str, keys: list[str],
                         complete: dict[str, dict[str, naming.FileName]]) -> list[str]:
        """Staged sets renamed into the inbox: the data and FS of every set, one sync of
        the folder, then their GOs and another sync; the keys of the sets now whole
        there. A set whose move fails stays `delivering` (finished from its staging
        folder next poll) and says why."""
        if not keys:
            return []
        inbox = self.channel.inbox / environment
        failed: set[str] = set()
        gos = {k: [n for n, p in complete[k].items() if p.type == "GO"] for k in keys}
        sources = {k: self._legacy_staging(folder, k) for k in keys}
        try:
            # inbox/<env> by descriptor: a link put there by whoever writes the inbox is
            # refused (safedir.FolderReplaced), never followed
            with safedir.opened(self.channel.inbox, [environment], create=True) as inbox_fd:
                for set_key in keys:
                    if not sources[set_key].is_dir():  # staged by this version: shared folder
                        sources[set_key] = self._staging(folder)
                    staging = sources[set_key]
                    try:
                        staged = (sorted(os.listdir(staging)) if staging != self._staging(folder)
                                  else self._staged_names(complete[set_key]))
                        for name in staged:
                            if name not in gos[set_key] and (staging / name).exists():
                                filemodes.share_file(staging / name, inbox)  # 0640
                                os.replace(staging / name, name, dst_dir_fd=inbox_fd)
                    except OSError as exc:
                        failed.add(set_key)
                        self._delivery_failed(folder, set_key, exc, inbox)
                os.fsync(inbox_fd)  # every data file is in place before any GO
                faults.point("between_reply_renames")
                for set_key in [k for k in keys if k not in failed]:
                    staging = sources[set_key]
                    try:
                        for name in gos[set_key]:
                            if (staging / name).exists():
                                filemodes.share_file(staging / name, inbox)  # 0640
                                os.replace(staging / name, name, dst_dir_fd=inbox_fd)
                    except OSError as exc:
                        failed.add(set_key)
                        self._delivery_failed(folder, set_key, exc, inbox)
                os.fsync(inbox_fd)
        except OSError as exc:  # the inbox itself: no set of the slice is whole for sure
            for set_key in keys:
                if set_key not in failed:
                    self._delivery_failed(folder, set_key, exc, inbox)
            return []
        moved = [k for k in keys if k not in failed]
        for set_key in moved:
            if sources[set_key] != self._staging(folder):  # a set staged before 20
                shutil.rmtree(sources[set_key], ignore_errors=True)  # empty now
        return moved

    def _delivery_failed(self, folder: str, set_key: str, exc: OSError, where: Path) -> None:
        self.failures += 1
        self.log.error("reply_delivery_failed", folder=folder, set_key=set_key,
                       path=str(exc.filename or where), error=exc.strerror or str(exc),
                       hint="nothing is removed from the server; tried again next poll")

    def _fetch_together(self, folder: str, keys: list[str],
                        complete: dict[str, dict[str, naming.FileName]],
                        listing: dict[str, int]) -> dict[str, dict[str, str]]:
        """Download the files of new sets in one pipelined batch into their staging
        folder; the sets whose every file arrived whole, with the SHA-256 of each file
        (hashed as it streamed). A file gone from the server (another client took it)
        or changed meanwhile skips its set for this poll only."""
        items: list[tuple[str, int, Path]] = []
        owner: list[str] = []
        staging = self._staging(folder)
        try:
            if keys:  # the inbox 0750 for the drop group; .incoming flad's alone
                filemodes.make_folders(staging.parent, 0o700)
                filemodes.make_folders(staging, 0o700)
            for set_key in keys:
                self._discard(folder, set_key, complete[set_key])  # a download a crash interrupted
                for name in sorted(complete[set_key]):
                    items.append((f"{folder}/{name}", listing[name], staging / name))
                    owner.append(set_key)
            # one syncfs for the slice (in `_stage`) where there is one, else each file
            results = (self.transport.get_files(items, sync=not durable.can_sync_filesystem())
                       if items else [])
        except OSError as exc:  # local (a full disk, an unwritable inbox): nothing removed
            for set_key in keys:
                self._discard(folder, set_key, complete[set_key])
            self.failures += len(keys)
            self.log.error("reply_delivery_failed", folder=folder, sets=len(keys),
                           path=str(exc.filename or self.channel.inbox / INCOMING),
                           error=exc.strerror or str(exc),
                           hint="nothing is removed from the server; tried again next poll")
            return {}
        failed: dict[str, str] = {}
        digests: dict[str, dict[str, str]] = {k: {} for k in keys}
        for (remote, _, _), set_key, result in zip(items, owner, results, strict=True):
            if isinstance(result, Downloaded):
                digests[set_key][remote.rsplit("/", 1)[-1]] = result.sha256
            if isinstance(result, TransportError) and set_key not in failed:
                failed[set_key] = str(result)
                event = ("reply_vanished" if isinstance(result, RemoteNotFound)
                         else "reply_download_failed")
                self.log.warning(event, folder=folder, set_key=set_key, file=remote,
                                 error=str(result), hint="skipped for this poll")
            faults.point("during_reply_download")
        for set_key in failed:
            self._discard(folder, set_key, complete[set_key])
        return {k: v for k, v in digests.items() if k not in failed}

    def _staging(self, folder: str) -> Path:
        """Where the sets of a remote folder are downloaded and checked: one folder for
        all of them (reply names are unique there), so that a set costs no folder of its
        own to make, sync and remove."""
        return self.channel.inbox / INCOMING / folder

    def _legacy_staging(self, folder: str, set_key: str) -> Path:
        """A set's own staging folder, as flad made them before issue 20: a set a crash
        left `delivering` there is finished from it."""
        return self.channel.inbox / INCOMING / f"{folder}.{set_key}"

    @staticmethod
    def _staged_names(files: dict[str, naming.FileName]) -> list[str]:
        """The names a set may have in staging: its files, and what a CO unpacked to."""
        return sorted([*files, *(replyunpack.unpacked_name(n) for n, p in files.items()
                                 if p.type == "CO")])

    def _discard(self, folder: str, set_key: str, files: dict[str, naming.FileName]) -> None:
        """What is staged of a set that will not be delivered from there: removed."""
        shutil.rmtree(self._legacy_staging(folder, set_key), ignore_errors=True)
        staging = self._staging(folder)
        for name in self._staged_names(files):
            with suppress(OSError):
                (staging / name).unlink(missing_ok=True)

    def _remove_together(self, folder: str,
                         sets: dict[str, dict[str, naming.FileName]]) -> None:
        """Remove delivered sets in one pipelined batch: every GO first, so that a set
        half removed by a crash is never seen as complete again."""
        if not sets:
            return
        names = [(k, n) for k, files in sets.items() for n in files if files[n].type == "GO"]
        names += [(k, n) for k, files in sets.items() for n in sorted(files)
                  if files[n].type != "GO"]
        results = self.transport.remove_files([f"{folder}/{n}" for _, n in names])
        failed = {k for (k, _), result in zip(names, results, strict=True)
                  if result is not None}
        for (set_key, name), result in zip(names, results, strict=True):
            if result is not None:
                self.log.warning("reply_remove_failed", folder=folder, set_key=set_key,
                                 file=name, error=str(result),
                                 hint="delivered; its removal is tried again next poll")
        removed = [k for k in sets if k not in failed]
        with self.journal.batch():
            for set_key in removed:
                self.journal.record_reply_removed(self.channel.name, folder, set_key)
        for set_key in removed:
            self.log.info("reply_removed", folder=folder, set_key=set_key)

    def _download(self, folder: str, set_key: str, files: dict[str, naming.FileName],
                  sizes: dict[str, int], staging: Path, *, synced: bool) -> bool:
        """The set, fetched into its staging folder, made durable (unless `synced`: the
        whole file system was) and checked; False when it must not be delivered."""
        for name in files:
            if not (staging / name).is_file() or (staging / name).stat().st_size != sizes[name]:
                raise OSError(0, f"{name} is not whole in {staging}")
        if not synced:
            durable.fsync_dir(staging)
        faults.point("after_reply_download")
        problem = self._verify(staging, files)
        if problem is not None:
            if set_key not in self._warned:
                self._warned.add(set_key)
                self.log.error("reply_untrusted", folder=folder, set_key=set_key,
                               reason=problem)
            self._discard(folder, set_key, files)
            self.failures += 1
            return False
        return True

    def _verify(self, staging: Path, files: dict[str, naming.FileName]) -> str | None:
        """With `reply_trust`, every file of the set answers for itself, not only the data.

        The platform's reply sets hold data files (FO, CO), one FS per data file and a
        GO (DOMAIN.md, "Replies"). A set with a file of another type (an FI or TD from
        the sender's side), an FS that signs nothing in the set, or no data file at all
        is not one the platform wrote: delivering it as trusted would put unsigned bytes
        in the inbox under the name of a checked reply. The GO is a completion marker;
        the platform's documents say the GO flad sends is empty, not what a reply's GO
        holds, so its content is not judged here.
        """
        if self._trust is None:
            return None
        data_names = [name for name, parsed in sorted(files.items())
                      if parsed.type in DATA_TYPES]
        if not data_names:
            return "the set holds no FO or CO file: nothing in it is signed"
        for name, parsed in sorted(files.items()):
            if parsed.type == "GO":
                continue
            if parsed.type == "FS":
                if not any(str(parsed.with_type(t)) in files for t in DATA_TYPES):
                    return f"{name} signs no FO or CO file of its set"
            elif parsed.type not in DATA_TYPES:
                return (f"{name}: a reply set holds FO or CO files, their FS and a GO; "
                        f"a {parsed.type} file is not one the platform sends")
        for name in data_names:
            fs_name = str(files[name].with_type("FS"))
            if fs_name not in files:
                return f"{name} has no FS signature in its set"
            fs_size = (staging / fs_name).stat().st_size
            if fs_size > MAX_FS_BYTES:
                return f"{fs_name} is {fs_size} bytes: too large for a signature"
            try:
                with mapped(staging / name) as data:
                    signing.verify_fs(data, (staging / fs_name).read_bytes(),
                                      trusted=self._trust)
            except signing.SignatureInvalid as exc:
                return f"{name}: {exc}"
        return None

    def _finish_removals(self, partial: dict[str, dict[str, naming.FileName]],
                         folder: str) -> None:
        """Sets without a GO that were delivered: a crash cut their removal after the GO.

        The GO goes first so that a half-removed set is never taken again; what is left
        of it is removed here, or it would stay on the server for ever.
        """
        cut = {k: files for k, files in partial.items()
               if self.journal.reply_set_state(self.channel.name, folder, k) == "delivered"}
        for set_key, files in cut.items():
            self.log.info("reply_removal_resumed", folder=folder, set_key=set_key,
                          files=sorted(files))
        self._remove_together(folder, cut)

    def _unpack(self, folder: str, set_key: str, staging: Path,
                files: dict[str, naming.FileName]) -> None:
        """A CO file that is a ZIP of one entry is also unpacked beside it, within limits."""
        unpacked = False
        for name, parsed in sorted(files.items()):
            if parsed.type != "CO":
                continue
            unpacked = True
            target = staging / replyunpack.unpacked_name(name)
            try:
                size = replyunpack.unpack_single(staging / name, target)
            except replyunpack.UnpackRefused as exc:
                self.log.warning("reply_unpack_refused", folder=folder, set_key=set_key,
                                 file=name, reason=str(exc),
                                 hint="the CO file is delivered as received")
                continue
            except OSError as exc:
                self.log.warning("reply_unpack_refused", folder=folder, set_key=set_key,
                                 file=name, reason=exc.strerror or str(exc),
                                 hint="the CO file is delivered as received")
                target.unlink(missing_ok=True)
                continue
            self.log.info("reply_unpacked", folder=folder, set_key=set_key, file=name,
                          unpacked=target.name, size=size)
        if unpacked:
            durable.fsync_dir(staging)

    # -- reading replies and tying them to submissions ---------------------------------

    def _correlate(self, folder: str, set_key: str, staging: Path,
                   files: dict[str, naming.FileName]) -> None:
        for name, parsed in sorted(files.items()):
            if parsed.type not in DATA_TYPES:
                continue
            source = staging / name
            if parsed.type == "CO":
                source = staging / replyunpack.unpacked_name(name)
                if not source.exists():
                    self._record_other(folder, set_key, name, f"CO.{parsed.application}",
                                       "compressed reply, not unpacked (see the log)")
                    continue
            if parsed.application not in ("ACRF", "NOTI"):
                kind = "compressed reply, unpacked" if parsed.type == "CO" else "reply"
                self._record_other(folder, set_key, name, parsed.application,
                                   f"{kind} of type {parsed.application}, delivered whole, "
                                   "not read by flad")
                continue
            size = source.stat().st_size
            if size > MAX_READ_BYTES:
                self.log.warning("reply_not_read", file=name, size=size,
                                 reason=f"larger than the {MAX_READ_BYTES} bytes flad reads",
                                 hint="delivered whole; read it in the inbox")
                self._record_other(folder, set_key, name, parsed.application,
                                   f"{size} bytes, larger than flad reads ({MAX_READ_BYTES}):"
                                   " delivered whole, not read")
                continue
            try:
                reply = replyparse.parse_reply(source.read_bytes())
            except (replyparse.ReplyUnreadable, OSError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                self.log.warning("reply_unreadable", file=name, error=reason)
                self._record_other(folder, set_key, name, parsed.application,
                                   f"unreadable: {reason}")
                continue
            if reply.kind not in (replyparse.RECEIPT, replyparse.NOTIFICATION):
                self._record_other(folder, set_key, name, reply.kind,
                                   f"root element {reply.kind}, not read by flad")
            elif not reply.forms:
                self.log.warning("reply_unreadable", file=name, error="no Form in the file")
                self._record_other(folder, set_key, name, reply.kind, "no Form in the file")
            elif reply.kind == replyparse.RECEIPT:
                for index, form in enumerate(reply.forms, start=1):
                    self._on_receipt(folder, set_key, name, index, form)
            else:
                self._on_notification(folder, set_key, name, reply)

    def _record_other(self, folder: str, set_key: str, name: str, kind: str,
                      summary: str) -> None:
        self.journal.record_reply(channel=self.channel.name, folder=folder, set_key=set_key,
                                  file_name=name, form_index=0, kind=kind,
                                  submission_id=None, tied_by=None, names={},
                                  summary=summary)
        self.log.info("reply_other", file=name, kind=kind, summary=summary)

    def _tie(self, name: str, index: int,
             form: ReplyForm) -> tuple[Submission | None, str | None, dict[str, object]]:
        """The submission a form answers, how it was found, and what the form names.

        In order: FileReference/FileName (any name of the set flad sent), the
        ticket(s) it carries, then - only without FileReference - the sent form's own
        header (HandledOriginalForm and the declarant's reference). A step that finds
        several submissions ties nothing and says so.
        """
        names: dict[str, object] = {}
        ref = form.file_reference
        channel = self.channel.name
        steps: list[tuple[str, Callable[[], list[Submission]]]] = []
        if ref is not None and ref.file_name:
            names["file_name"] = ref.file_name
            steps.append(("file_name", partial(self.journal.find_by_names, channel,
                                               *_set_names(ref.file_name))))
        if form.tickets:
            names["tickets"] = list(form.tickets)
        for ticket in form.tickets:
            steps.append(("ticket", partial(self.journal.find_by_reference, channel, ticket)))
        handled = form.handled_form
        if ref is None and handled is not None and handled.identification and \
                handled.creation_date and handled.creation_hour:
            sent = SentFormRow(handled.identification, handled.creation_date,
                               handled.creation_hour, form.declarant_reference)
            names["form"] = {k: v for k, v in sent.__dict__.items() if v}
            steps.append(("form", partial(self.journal.find_by_form, channel, sent)))
        for how, find in steps:
            found = find()
            if len(found) == 1:
                return found[0], how, names
            if len(found) > 1:
                self.log.warning("reply_ambiguous", file=name, form=index, by=how,
                                 names=names, submissions=[s.id for s in found],
                                 hint="tied to none of them; see flad status --unmatched")
                return None, None, names
        return None, None, names

    def _on_receipt(self, folder: str, set_key: str, name: str, index: int,
                    form: ReplyForm) -> None:
        sub, how, names = self._tie(name, index, form)
        codes = " ".join(form.error_ids)
        verdict = ("no result" if form.reception_result is None else
                   replyparse.RECEPTION_MEANINGS.get(form.reception_result, "unknown result"))
        summary = " ".join(f"receipt {form.type_form or '?'} {verdict} {codes}".split())
        if sub is not None and form.reception_result is None:
            self.log.warning("reply_unreadable", file=name, form=index,
                             error="the receipt has no ReceptionResult/ResultCode")
            sub = None
        self.journal.record_reply(channel=self.channel.name, folder=folder, set_key=set_key,
                                  file_name=name, form_index=index, kind=replyparse.RECEIPT,
                                  submission_id=sub.id if sub else None, tied_by=how,
                                  names=names, summary=summary)
        if sub is None:
            self.log.warning("reply_unmatched", file=name, form=index, kind="ACRF",
                             names=names, summary=summary)
            return
        accepted = form.reception_result == 1
        errors = [{"error_id": e, "label": replyparse.label_for(e, self._labels)}
                  for e in form.error_ids]
        detail = "; ".join(f"{e['error_id']} {e['label'] or ''}".strip() for e in errors)
        self.journal.record_receipt(sub.id, accepted=accepted, errors=errors,
                                    reference=form.file_reference.number
                                    if form.file_reference else None,
                                    receipt_name=name, type_form=form.type_form,
                                    detail=detail or None)
        if accepted:
            self.log.info("submission_acknowledged", submission=sub.id, fi_name=sub.fi_name,
                          reference=form.file_reference.number if form.file_reference
                          else None, type_form=form.type_form, tied_by=how)
        else:
            self.log.warning("submission_refused", submission=sub.id, fi_name=sub.fi_name,
                             error_ids=list(form.error_ids), reason=detail or None,
                             type_form=form.type_form, tied_by=how)

    def _on_notification(self, folder: str, set_key: str, name: str, reply: Reply) -> None:
        groups: dict[int, list[tuple[int, ReplyForm, str]]] = defaultdict(list)
        subs: dict[int, Submission] = {}
        for index, form in enumerate(reply.forms, start=1):
            sub, how, names = self._tie(name, index, form)
            summary = _noti_summary(form)
            self.journal.record_reply(
                channel=self.channel.name, folder=folder, set_key=set_key, file_name=name,
                form_index=index, kind=replyparse.NOTIFICATION,
                submission_id=sub.id if sub else None, tied_by=how, names=names,
                summary=summary)
            if sub is None:
                self.log.warning("reply_unmatched", file=name, form=index,
                                 kind="NOTIFICATION", names=names, summary=summary)
                continue
            assert how is not None
            subs[sub.id] = sub
            groups[sub.id].append((index, form, how))
        for sub_id, entries in groups.items():
            forms = [f for _, f, _ in entries]
            anomalies = [{**a.as_json(self._labels), "form": index}
                         for index, f, _ in entries for a in f.anomalies]
            blocking = sum(1 for _, f, _ in entries for a in f.anomalies if a.blocking)
            provisional = all(f.provisional for f in forms)
            type_forms = [f.type_form for f in forms if f.type_form]
            type_form = replyparse.PROVISIONAL if provisional else next(
                (t for t in type_forms if t != replyparse.PROVISIONAL), None)
            result = combined_result(forms)
            summaries = [_form_json(index, f, how) for index, f, how in entries]
            recorded = self.journal.record_notification(
                sub_id, result=result, blocking=blocking, other=len(anomalies) - blocking,
                anomalies=anomalies, noti_name=name, type_form=type_form,
                provisional=provisional, forms=summaries)
            sub = subs[sub_id]
            event = "submission_notified_provisional" if provisional else "submission_notified"
            self.log.info(event, submission=sub_id, fi_name=sub.fi_name, result=result,
                          meaning=replyparse.RESULT_MEANINGS.get(result or -1),
                          forms=len(forms), blocking=blocking,
                          other=len(anomalies) - blocking, recorded=recorded)


@contextmanager
def mapped(path: Path) -> Iterator[bytes | memoryview]:
    """A file's bytes through the page cache, without a copy in the process's memory:
    a reply may be hundreds of MiB."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as whole:
            view = memoryview(whole)
            try:
                yield view
            finally:
                view.release()


def _delivery_order(files: dict[str, naming.FileName]) -> list[str]:
    """The names of a set in the order they enter the inbox: data and FS, then GO."""
    return sorted(files, key=lambda n: (files[n].type == "GO", n))


def _set_names(file_name: str) -> tuple[str, ...]:
    """The name a reply gives, and the GO name of its set (an FI or FS part names it too)."""
    try:
        parsed = naming.parse(file_name)
    except naming.InvalidName:
        return (file_name,)
    if parsed.type not in ("FI", "FS", "GO"):
        return (file_name,)
    return tuple(dict.fromkeys((file_name, str(parsed.with_type("GO")))))


def _noti_summary(form: ReplyForm) -> str:
    meaning = form.result_meaning or "no result"
    provisional = " (provisional)" if form.provisional else ""
    return (f"notification {form.type_form or '?'} result {form.result}: {meaning}"
            f"{provisional}, {form.blocking} blocking of {len(form.anomalies)} anomalies")


def _form_json(index: int, form: ReplyForm, how: str) -> dict[str, object]:
    handled = form.handled_form
    return {"form": index, "identification": form.identification,
            "type_form": form.type_form, "result": form.result,
            "meaning": form.result_meaning, "provisional": form.provisional,
            "tied_by": how, "ticket": form.tickets[0] if form.tickets else None,
            "handled_form": None if handled is None else {
                "identification": handled.identification,
                "creation_date": handled.creation_date,
                "creation_hour": handled.creation_hour},
            "declarant_reference": form.declarant_reference,
            "employer": dict(form.employer), "anomalies": len(form.anomalies)}
