"""The outbox: where payroll software drops files, and how flad takes them.

A file is taken only when it is whole: at once when it arrived by rename (the polite
way to drop a file), after `settle_seconds` without change in size and modification
time when it is written in place. Taking a file means moving it out of the outbox into
the spool at once, so that the payroll side can never change it under flad's feet.
Entries that are not regular files are refused without ever being opened.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import select
import stat
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

try:  # full events tell a file renamed in from elsewhere apart from a new file
    from watchdog.observers.inotify import InotifyObserver as _Inotify

    _INOTIFY: Any = _Inotify
except ImportError:  # pragma: no cover - not Linux
    _INOTIFY = None

from flad import faults, filemodes, logs, safedir, spool, taking
from flad.config import ChannelConfig, Config
from flad.droplayout import is_ignored
from flad.journal import Journal, Received
from flad.platform import ENVIRONMENTS
from flad.printable import printable

_READ_CHUNK = 1024 * 1024
#: Files at least this big are hashed by the check, beside its parse (on another
#: core), not here: the claim is on the way from the drop to the upload.
BIG_FILE_BYTES = 4 * 1024 * 1024
#: Events handled (and files claimed) together at most.
CLAIM_BATCH = 64
#: Contents kept in memory for the check, for one claim batch together; the rest is
#: read again from the spool (and compared with its journaled sha256) when checked.
CLAIM_BATCH_BYTES = 64 * 1024 * 1024
_SAID_LIMIT = 10_000


@dataclass(frozen=True)
class DropFolder:
    channel: str
    environment: str  # "test" | "simulation" | "production"
    application: str
    path: Path


@dataclass(frozen=True)
class Claimed:
    submission_id: int
    channel: str
    data: bytes | None  # the content read while hashing, kept so it is not read twice


def drop_folders(config: Config) -> list[DropFolder]:
    """Every folder flad watches: <outbox>/<test|simulation|production>/<app>/ per channel.

    production/ is watched even for channels that may not send production files, so
    that a file dropped there is refused with a reason instead of lying there forever.
    """
    return [
        DropFolder(ch.name, env, app.name, ch.outbox / env / app.name)
        for ch in config.channels for env in ENVIRONMENTS for app in ch.applications
    ]


_kind = taking.kind


class Claimer:
    """Moves a dropped file into the spool and records it as `received`.

    Drop folders are opened by descriptor (`safedir`), each held to the device, inode
    and owner it had when first opened: a folder replaced (by a link, or by another
    folder) is stopped with one `drop_folder_replaced` line, the others go on.
    """

    def __init__(self, config: Config, journal: Journal) -> None:
        self.config = config
        self.journal = journal
        self.log = logs.get("flad.outbox")
        #: files left in the outbox because they could not be taken (`--once` fails)
        self.failures = 0
        #: files taken into the spool whose journal write failed: recorded next turn
        self.unrecorded = False
        #: a claimed entry whose copy could not be finished: tried again at the rescan
        self.unfinished = False
        self.stopped: set[Path] = set()
        self._identities: dict[Path, safedir.Identity] = {}
        #: entries that could not be taken or moved, said once while they stay as is
        self._said: dict[tuple[Path, str, int, int], None] = {}

    def spool_dir(self, folder: DropFolder) -> Path:
        return spool.spool_dir(self._channel(folder), folder.environment, folder.application)

    def open_folder(self, folder: DropFolder, *, create: bool = False) -> int | None:
        """The drop folder by descriptor; None (said once) when it was replaced.

        Raises OSError when it cannot be opened for another reason (missing, no access).
        """
        if folder.path in self.stopped:
            return None
        channel = self._channel(folder)
        try:
            fd = safedir.open_below(channel.outbox, [folder.environment, folder.application],
                                    create=create, leaf_mode=filemodes.DROP_FOLDER)
        except safedir.FolderReplaced as exc:
            self.stop(folder, exc)
            return None
        try:
            self._identities.setdefault(
                folder.path, safedir.check_identity(fd, self._identities.get(folder.path)))
        except safedir.FolderReplaced as exc:
            os.close(fd)
            self.stop(folder, exc)
            return None
        return fd

    def stop(self, folder: DropFolder, exc: OSError) -> None:
        """Stop one drop folder, loudly, once: the service and its other folders go on."""
        self.stopped.add(folder.path)
        self.failures += 1  # `--once` fails: something in the outbox is not taken
        self.log.error("drop_folder_replaced", channel=folder.channel,
                       environment=folder.environment, application=folder.application,
                       path=str(folder.path), error=exc.strerror or str(exc),
                       action="flad takes nothing more from this folder until it is "
                       "restarted or reloaded",
                       fix="make it a plain folder again (not a link), owned as it was, "
                       "then `systemctl reload flad`")

    def claim(self, folder: DropFolder, path: Path) -> Claimed | None:
        """Take one entry; None when it vanished or cannot be moved (left in place)."""
        return self.claim_many(folder, [path])[0]

    def claim_many(self, folder: DropFolder, paths: list[Path]) -> list[Claimed | None]:
        """Take several entries of one folder, with shared fsyncs and one transaction.

        Every file is taken into the spool first; then the spool folder and the drop
        folder are synced once for all of them, and only then are they journaled (a
        drop of many files costs two folder syncs instead of two per file). When that
        journal write fails, the files wait in the spool and `unrecorded` asks the
        watcher to record them at its next turn (`recover`), not only at a restart.
        The contents kept for the check are bounded in bytes for the whole batch.
        """
        results: list[Claimed | None] = [None] * len(paths)
        try:
            drop_fd = self.open_folder(folder)
        except OSError as exc:
            self.failures += 1
            self.log.warning("outbox_unreadable", channel=folder.channel,
                             path=str(folder.path), error=exc.strerror)
            return results
        if drop_fd is None:
            return results
        try:
            spool_dir = self.spool_dir(folder)
            try:
                spool_fd = spool.open_spool(self._channel(folder), folder.environment,
                                            folder.application)
            except OSError as exc:
                self.failures += 1
                self.log.warning("claim_failed", channel=folder.channel, path=str(spool_dir),
                                 error=exc.strerror or str(exc), reason="the spool folder "
                                 "cannot be opened; the files stay in the outbox",
                                 fix="flad's user needs the outbox's .flad-spool folder, "
                                 "its own (mode 0700), not a link")
                return results
            try:
                taken = self._take_all(folder, drop_fd, spool_fd, paths)
                if not taken:
                    return results
                os.fsync(spool_fd)
                with contextlib.suppress(OSError):
                    os.fsync(drop_fd)
            finally:
                os.close(spool_fd)
        finally:
            os.close(drop_fd)
        faults.point("after_claim")
        try:
            claimed = self._record(folder, [(spool_dir / t.name, t) for _, t in taken])
        except Exception as exc:  # a full disk, a busy database: found again next turn
            self.unrecorded = True
            self.log.error("claim_not_recorded", channel=folder.channel, files=len(taken),
                           error=str(exc) or type(exc).__name__,
                           action="the files wait in the spool; the next turn records them")
            return results
        for (i, _), one in zip(taken, claimed, strict=True):
            results[i] = one
        return results

    def _take_all(self, folder: DropFolder, drop_fd: int, spool_fd: int,
                  paths: list[Path]) -> list[tuple[int, taking.Taken]]:
        app = self._channel(folder).application(folder.application)
        limit = app.max_file_bytes if app is not None else 0
        budget = CLAIM_BATCH_BYTES
        taken: list[tuple[int, taking.Taken]] = []
        for i, path in enumerate(paths):
            one = self._take(folder, drop_fd, spool_fd, path.name, min(limit, budget))
            if one is not None:
                taken.append((i, one))
                budget -= len(one.data or b"")
        return taken

    def _take(self, folder: DropFolder, drop_fd: int, spool_fd: int, name: str,
              keep_up_to: int) -> taking.Taken | None:
        """Take one entry into the spool (not yet synced); None when not taken."""
        text = spool.text_name(name)
        log = self.log.bind(channel=folder.channel, drop_name=printable(text),
                            environment=folder.environment, application=folder.application)
        try:
            st = os.stat(name, dir_fd=drop_fd, follow_symlinks=False)
        except FileNotFoundError:
            log.info("file_vanished")
            return None
        except OSError as exc:
            self.failures += 1
            log.warning("file_unreadable", path=str(folder.path / text), error=exc.strerror)
            return None
        key = (folder.path, name, st.st_ino, st.st_mtime_ns)
        if not stat.S_ISREG(st.st_mode):
            self._refuse(folder, folder.path, drop_fd, name, key, log,
                         taking.not_regular(repr(text), _kind(st.st_mode)))
            return None
        final = f"{uuid.uuid4().hex[:12]}_{text}"
        limit = safedir.name_max(spool_fd)
        if len(os.fsencode(taking.CLAIMING_PREFIX + final)) > limit:
            self._refuse(folder, folder.path, drop_fd, name, key, log,
                         f"the name {text!r} is {len(os.fsencode(name))} bytes long; flad "
                         f"takes names of at most {limit - spool.NAME_OVERHEAD} bytes here: "
                         "drop it again under a shorter name")
            return None
        try:
            return taking.take(drop_fd, name, spool_fd, final, shown=repr(text),
                               expected=st, keep_up_to=keep_up_to)
        except taking.NotTaken as exc:
            log.info("file_vanished" if str(exc) == "vanished" else "file_changed_while_taken")
            return None
        except taking.Refused as refused:
            where = folder.path if refused.where == drop_fd else self.spool_dir(folder)
            self._refuse(folder, where, refused.where, refused.name, key, log,
                         refused.reason, drop_name=name)
            return None
        except OSError as exc:
            self.failures += 1
            if _exists(spool_fd, taking.CLAIMING_PREFIX + final):
                # renamed in, not yet flad's own copy (a full disk): it has left the
                # outbox, so it is finished from the spool by the watcher's next turn
                self.unrecorded = True
                if self._said_once(key):
                    log.error("claim_not_finished", path=str(folder.path / text),
                              spool=str(self.spool_dir(folder)), error=exc.strerror,
                              action="the file waits in the spool; it is taken in once "
                              "the copy can be made (said once)")
                return None
            if not self._said_once(key):
                return None
            log.warning("claim_failed", path=str(folder.path / text),
                        spool=str(self.spool_dir(folder) / final), error=exc.strerror,
                        reason="the file could not be moved out of the outbox into the "
                        "spool; it stays there and is tried again (said once)",
                        fix="flad's user needs write access to the drop folder")
            return None

    def _said_once(self, key: tuple[Path, str, int, int]) -> bool:
        """True the first time an entry fails (as it is now): said once, tried again
        silently at each look, said again only once it changed."""
        if key in self._said:
            return False
        if len(self._said) >= _SAID_LIMIT:
            self._said.pop(next(iter(self._said)))
        self._said[key] = None
        return True

    def _record(self, folder: DropFolder,
                files: list[tuple[Path, taking.Taken]]) -> list[Claimed]:
        rows = [Received(folder.channel, folder.application, folder.environment,
                         spool.drop_name(target), str(target), t.sha256, t.size)
                for target, t in files]
        ids = self.journal.add_received_many(rows)
        for sub_id, row in zip(ids, rows, strict=True):
            self.log.info("file_claimed", channel=folder.channel,
                          drop_name=printable(row.drop_name), submission=sub_id,
                          size=row.size, sha256=row.sha256 or None)
        return [Claimed(sub_id, folder.channel, t.data)
                for sub_id, (_, t) in zip(ids, files, strict=True)]

    def register(self, folder: DropFolder, target: Path) -> Claimed | None:
        """Hash a spooled file and journal it (also used to recover after a crash)."""
        return self.register_many(folder, [target])[0]

    def register_many(self, folder: DropFolder, targets: list[Path]) -> list[Claimed]:
        """Hash spooled files (streamed) and journal them together."""
        files = []
        for target in targets:
            try:
                digest, size = taking.sha256_of(None, str(target))
            except OSError as exc:
                self.log.warning("file_unreadable", channel=folder.channel,
                                 drop_name=printable(spool.drop_name(target)),
                                 error=exc.strerror)
                digest, size = "", os.lstat(target).st_size
            files.append((target, taking.Taken(target.name, digest, size, None)))
        return self._record(folder, files)

    def _channel(self, folder: DropFolder) -> ChannelConfig:
        channel = self.config.channel(folder.channel)
        assert channel is not None
        return channel

    def _refuse(self, folder: DropFolder, where: Path, folder_fd: int, name: str,
                key: tuple[Path, str, int, int], log: Any, reason: str, *,
                drop_name: str | None = None) -> None:
        """An entry flad may not read goes to rejected/ unopened (journal first)."""
        try:
            spool.reject_entry(self.journal, self._channel(folder), folder.environment,
                               folder.application, where, folder_fd, name, reason,
                               drop_name=drop_name)
        except FileNotFoundError:
            log.info("file_vanished")
        except OSError as exc:
            self.failures += 1
            if self._said_once(key):
                log.warning("claim_failed", path=str(where / spool.text_name(name)),
                            error=exc.strerror or str(exc), reason=reason,
                            action="refused and journaled; it stays where it is, the move "
                            "is tried again at each look (said once)")

    def recover(self, folders: Iterable[DropFolder], *,
                on_claimed: Callable[[Claimed], None] | None = None) -> int:
        """Journal spooled files that a crash (or a failed journal write) left unrecorded."""
        count = 0
        for folder in folders:
            count += self._recover_legacy(folder)
            try:
                spool_fd = spool.open_spool(self._channel(folder), folder.environment,
                                            folder.application)
            except OSError:
                continue  # no outbox yet, or a spool that is not flad's: said on claim
            try:
                names = sorted(os.listdir(spool_fd))
                for name in names:
                    if name.startswith(taking.COPYING_PREFIX):  # a copy a crash cut short
                        with contextlib.suppress(OSError):
                            os.unlink(name, dir_fd=spool_fd)
                for name in names:
                    if name.startswith(taking.CLAIMING_PREFIX):
                        self._finish_claiming(folder, spool_fd, name)
                names = sorted(os.listdir(spool_fd))
            finally:
                os.close(spool_fd)
            spool_dir = self.spool_dir(folder)
            for name in names:
                entry = spool_dir / name
                if name.startswith(".") or self.journal.by_spool_path(str(entry)):
                    continue
                self.log.warning("spool_recovered", channel=folder.channel, path=str(entry))
                try:
                    claimed = self.register(folder, entry)
                except Exception as exc:  # the journal still fails: next turn again
                    self.unrecorded = True
                    self.log.error("claim_not_recorded", channel=folder.channel,
                                   error=str(exc) or type(exc).__name__)
                    return count
                if claimed is not None:
                    count += 1
                    if on_claimed is not None:
                        on_claimed(claimed)
        return count

    def _finish_claiming(self, folder: DropFolder, spool_fd: int, name: str) -> None:
        """An entry renamed into the spool before a crash, not yet made flad's own."""
        final = name[len(taking.CLAIMING_PREFIX):]
        log = self.log.bind(channel=folder.channel, drop_name=printable(final))
        try:
            os.stat(final, dir_fd=spool_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:  # the copy is whole: it gets its final name only once synced
            os.unlink(name, dir_fd=spool_fd)
            return
        try:
            taking.own(spool_fd, name, final, shown=repr(spool.drop_name(Path(final))),
                       keep_up_to=-1)
            os.fsync(spool_fd)
        except taking.Refused as refused:
            self._refuse(folder, self.spool_dir(folder), spool_fd, name,
                         (folder.path, name, 0, 0), log, refused.reason,
                         drop_name=spool.drop_name(Path(final)))
        except OSError as exc:
            self.unfinished = True  # tried again at the next rescan
            if self._said_once((folder.path, name, 0, 0)):
                log.warning("spool_recovery_failed", error=exc.strerror or str(exc),
                            action="tried again at each rescan (said once)")

    def _recover_legacy(self, folder: DropFolder) -> int:
        """Files a crash left unrecorded in the spool's former place, the state folder."""
        legacy = (spool.legacy_spool_root(self.config.daemon.state_dir) / folder.channel
                  / folder.environment / folder.application)
        count = 0
        if not legacy.is_dir():
            return 0
        for entry in sorted(legacy.iterdir()):
            if entry.name.startswith(".") or self.journal.by_spool_path(str(entry)):
                continue
            self.log.warning("spool_recovered", channel=folder.channel, path=str(entry))
            if self.register(folder, entry):
                count += 1
        return count


class StabilityTracker:
    """Decides when a file written in place has stopped changing."""

    def __init__(self, settle_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.settle = settle_seconds
        self.clock = clock
        self._seen: dict[Path, tuple[int, int, float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)

    def ready(self, path: Path, st: os.stat_result) -> bool:
        """True once size and mtime are unchanged for settle_seconds (or the file is old)."""
        now = self.clock()
        if time.time() - st.st_mtime >= self.settle and path not in self._seen:
            return True
        signature = (st.st_size, st.st_mtime_ns)
        previous = self._seen.get(path)
        if previous is None or previous[:2] != signature:
            self._seen[path] = (*signature, now)
            return False
        if now - previous[2] >= self.settle:
            del self._seen[path]
            return True
        return False

    def pending(self) -> list[Path]:
        return list(self._seen)


_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_Q_OVERFLOW = 0x4000
_IN_ISDIR = 0x40000000
_IN_ONLYDIR = 0x01000000
_IN_DONT_FOLLOW = 0x02000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, name length


class _DropEvents:
    """The drop folders' events, read from the kernel's inotify directly (Linux).

    watchdog holds every IN_MOVED_FROM for half a second to pair it with an
    IN_MOVED_TO, and the events queued behind it wait too: each claim (a move out of
    a drop folder) held the next drop back by up to 0.5 s. flad only needs to know that
    a file arrived, and how: by rename (IN_MOVED_TO, taken at once) or written in place
    (IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE, taken once stable). It never asks for
    IN_MOVED_FROM. A queue overflow asks the watcher for a rescan.
    """

    MASK = (_IN_MOVED_TO | _IN_CREATE | _IN_MODIFY | _IN_CLOSE_WRITE | _IN_ONLYDIR
            | _IN_DONT_FOLLOW)

    def __init__(self, folders: Iterable[Path], sink: queue.Queue[tuple[Path, bool]],
                 overflow: threading.Event) -> None:
        self.sink = sink
        self.overflow = overflow
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        if self._fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        self._folders: dict[int, Path] = {}
        self._stop_r, self._stop_w = os.pipe()
        try:
            for folder in folders:
                wd = int(libc.inotify_add_watch(self._fd, os.fsencode(folder), self.MASK))
                if wd < 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"cannot watch {folder}: {os.strerror(code)}")
                self._folders[wd] = folder
        except BaseException:
            self._close_fds()
            raise
        self._thread = threading.Thread(target=self._run, name="outbox-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self._fd, self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                buf = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                logs.get("flad.outbox").error("outbox_events_lost", error=exc.strerror)
                self.overflow.set()  # the rescans still find every file
                return
            self._dispatch(buf)

    def _dispatch(self, buf: bytes) -> None:
        offset = 0
        while offset + _INOTIFY_EVENT.size <= len(buf):
            wd, mask, _cookie, length = _INOTIFY_EVENT.unpack_from(buf, offset)
            offset += _INOTIFY_EVENT.size
            raw = buf[offset:offset + length].rstrip(b"\0")
            offset += length
            if mask & _IN_Q_OVERFLOW:
                self.overflow.set()
                continue
            folder = self._folders.get(wd)
            if folder is None or not raw:
                continue  # an event on the folder itself (IN_IGNORED, ...)
            path = folder / os.fsdecode(raw)
            if mask & _IN_MOVED_TO:
                self.sink.put((path, True))
            elif mask & _IN_CREATE or not mask & _IN_ISDIR:
                self.sink.put((path, False))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._fd, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Events(FileSystemEventHandler):
    def __init__(self, sink: queue.Queue[tuple[Path, bool]]) -> None:
        self.sink = sink

    def on_moved(self, event: FileSystemEvent) -> None:
        dest = os.fsdecode(event.dest_path)
        if dest:
            self.sink.put((Path(dest), True))

    def on_created(self, event: FileSystemEvent) -> None:
        self.sink.put((Path(os.fsdecode(event.src_path)), False))

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.sink.put((Path(os.fsdecode(event.src_path)), False))

    on_closed = on_modified


class OutboxWatcher:
    """watchdog events plus periodic rescans; hands each whole file to `on_claimed`."""

    def __init__(self, config: Config, claimer: Claimer,
                 on_claimed: Callable[[Claimed], None]) -> None:
        self.config = config
        self.claimer = claimer
        self.on_claimed = on_claimed
        self.folders = {f.path: f for f in drop_folders(config)}
        self.tracker = StabilityTracker(config.daemon.settle_seconds)
        self.events: queue.Queue[tuple[Path, bool]] = queue.Queue()
        self.log = logs.get("flad.outbox")
        self._observer: Any = None
        self._overflow = threading.Event()  # events were lost: rescan now

    def prepare_folders(self) -> None:
        """Make the drop folders (by descriptor) and note what each one is.

        A folder that is a link already is stopped (`drop_folder_replaced`), not made
        nor watched; one that cannot be made raises OSError (the service says why).
        """
        for folder in self.folders.values():
            fd = self.claimer.open_folder(folder, create=True)
            if fd is not None:
                os.close(fd)

    def start_watching(self) -> None:
        if sys.platform.startswith("linux"):
            try:
                self._observer = _DropEvents(self._watched(), self.events, self._overflow)
                return
            except (OSError, AttributeError) as exc:  # no inotify, or out of watches
                self.log.warning("inotify_unavailable", error=str(exc),
                                 fallback="watchdog")
        self._observer = (_INOTIFY(generate_full_events=True)
                          if _INOTIFY is not None else Observer())
        handler = _Events(self.events)
        for path in self._watched():
            self._observer.schedule(handler, str(path), recursive=False)
        self._observer.start()

    def _watched(self) -> list[Path]:
        return [path for path in self.folders if path not in self.claimer.stopped]

    def stop_watching(self) -> None:
        if isinstance(self._observer, _DropEvents):
            self._observer.stop()
            self._observer = None
        elif self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def rescan(self) -> None:
        """Look at every drop folder: events can be missed (and none exist at start)."""
        if self.claimer.unfinished:
            self.claimer.unfinished = False
            self.claimer.unrecorded = True
        self.record_unrecorded()
        for path, folder in self.folders.items():
            try:
                fd = self.claimer.open_folder(folder)
                if fd is None:
                    continue
                try:
                    names = os.listdir(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                self.log.warning("outbox_unreadable", channel=folder.channel,
                                 path=str(path), error=exc.strerror)
                continue
            for start in range(0, len(names), CLAIM_BATCH):
                self.consider_many([(path / name, False)
                                    for name in names[start:start + CLAIM_BATCH]])

    def record_unrecorded(self) -> None:
        """Files taken whose journal write failed: recorded at the next turn."""
        if self.claimer.unrecorded:
            self.claimer.unrecorded = False
            self.claimer.recover(self.folders.values(), on_claimed=self.on_claimed)

    def consider(self, path: Path, *, immediate: bool) -> None:
        self.consider_many([(path, immediate)])

    def consider_many(self, entries: list[tuple[Path, bool]]) -> None:
        """Claim the entries that are whole (arrived by rename, or stable), together."""
        by_folder: dict[Path, list[tuple[str, bool]]] = {}
        for path, immediate in entries:
            if path.parent in self.folders and not is_ignored(path.name):
                by_folder.setdefault(path.parent, []).append((path.name, immediate))
        for folder_path, names in by_folder.items():
            folder = self.folders[folder_path]
            ready = self._whole(folder, names)
            if not ready:
                continue
            try:
                claimed = self.claimer.claim_many(folder, ready)
            except Exception as exc:  # one bad entry never stops the watcher
                self.claimer.failures += 1
                self.log.error("claim_failed", channel=folder.channel, path=str(folder.path),
                               drop_name=(printable(spool.text_name(ready[0].name))
                                          if len(ready) == 1 else None),
                               files=len(ready), error=str(exc) or type(exc).__name__)
                continue
            for one in claimed:
                if one is not None:
                    self.on_claimed(one)

    def _whole(self, folder: DropFolder, names: list[tuple[str, bool]]) -> list[Path]:
        """The entries of one folder that may be taken now (looked at by descriptor)."""
        try:
            fd = self.claimer.open_folder(folder)
        except OSError as exc:
            self.log.warning("outbox_unreadable", channel=folder.channel,
                             path=str(folder.path), error=exc.strerror)
            return []
        ready: list[Path] = []
        if fd is None:
            for name, _ in names:
                self.tracker.forget(folder.path / name)
            return ready
        try:
            for name, immediate in names:
                path = folder.path / name
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    self.tracker.forget(path)
                    continue
                if (stat.S_ISREG(st.st_mode) and not immediate
                        and not self.tracker.ready(path, st)):
                    continue
                self.tracker.forget(path)
                if path not in ready:  # several events for one file: claim it once
                    ready.append(path)
        finally:
            os.close(fd)
        return ready

    def pump(self, timeout: float) -> None:
        """Handle queued events for up to `timeout` seconds, then pending in-place writes.

        The events waiting at one moment are handled together (up to CLAIM_BATCH), so a
        drop of many files shares the folder syncs of its claims.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._overflow.is_set():
                self._overflow.clear()
                self.log.warning("outbox_events_overflowed", action="rescan")
                self.rescan()
            try:
                batch = [self.events.get(timeout=min(remaining, 0.25))]
            except queue.Empty:
                self._settle_pending()
                continue
            while len(batch) < CLAIM_BATCH:
                try:
                    batch.append(self.events.get_nowait())
                except queue.Empty:
                    break
            self.consider_many(batch)
        self._settle_pending()

    def _settle_pending(self) -> None:
        self.consider_many([(path, False) for path in self.tracker.pending()])

    def run(self, stop: threading.Event) -> None:
        self.rescan()
        next_rescan = time.monotonic() + self.config.daemon.rescan_seconds
        while not stop.is_set():
            self.pump(0.5)
            self.record_unrecorded()
            if time.monotonic() >= next_rescan:
                self.rescan()
                next_rescan = time.monotonic() + self.config.daemon.rescan_seconds


def _exists(folder_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except OSError:
        return False
    return True
