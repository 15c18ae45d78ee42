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
import hashlib
import os
import queue
import select
import stat
import struct
import sys
import threading
import time
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

from flad import durable, faults, logs, spool
from flad.config import ChannelConfig, Config
from flad.droplayout import is_ignored
from flad.journal import Journal, Received
from flad.platform import ENVIRONMENTS

_READ_CHUNK = 1024 * 1024
#: Files at least this big are hashed by the check, beside its parse (on another
#: core), not here: the claim is on the way from the drop to the upload.
BIG_FILE_BYTES = 4 * 1024 * 1024
#: Events handled (and files claimed) together at most.
CLAIM_BATCH = 64


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


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


class Claimer:
    """Moves a dropped file into the spool and records it as `received`."""

    def __init__(self, config: Config, journal: Journal) -> None:
        self.config = config
        self.journal = journal
        self.log = logs.get("flad.outbox")
        #: files left in the outbox because they could not be taken (`--once` fails)
        self.failures = 0

    def spool_dir(self, folder: DropFolder) -> Path:
        return spool.spool_dir(self.config.daemon.state_dir, folder.channel,
                               folder.environment, folder.application)

    def claim(self, folder: DropFolder, path: Path) -> Claimed | None:
        """Take one entry; None when it vanished or cannot be moved (left in place)."""
        return self.claim_many(folder, [path])[0]

    def claim_many(self, folder: DropFolder, paths: list[Path]) -> list[Claimed | None]:
        """Take several entries of one folder: `claim` for each, with shared fsyncs.

        Every file is moved into the spool first; then the spool folder and the drop
        folder are synced once for all of them, and only then is each one journaled.
        The journal still records a file as `received` only after its move is durable,
        and a drop of many files costs two folder syncs instead of two per file (under
        load each cost more than a millisecond, and the claims starved the worker).
        """
        results: list[Claimed | None] = [None] * len(paths)
        moved: list[tuple[int, Path]] = []
        spool_dir = self.spool_dir(folder)
        for i, path in enumerate(paths):
            target = self._move_in(folder, path, spool_dir)
            if target is not None:
                moved.append((i, target))
        if not moved:
            return results
        durable.fsync_dir(spool_dir)
        with contextlib.suppress(OSError):  # as durable.move: the source folder may be gone
            durable.fsync_dir(folder.path)
        faults.point("after_claim")
        for (i, _), claimed in zip(moved, self.register_many(folder, [t for _, t in moved]),
                                   strict=True):
            results[i] = claimed
        return results

    def _move_in(self, folder: DropFolder, path: Path, spool_dir: Path) -> Path | None:
        """Rename one entry into the spool (not yet synced); None when not taken."""
        log = self.log.bind(channel=folder.channel, drop_name=path.name,
                            environment=folder.environment, application=folder.application)
        try:
            st = path.lstat()
        except FileNotFoundError:
            log.info("file_vanished")
            return None
        except OSError as exc:
            self.failures += 1
            log.warning("file_unreadable", path=str(path), error=exc.strerror)
            return None
        if not stat.S_ISREG(st.st_mode):
            self._refuse_special(folder, path, st.st_mode, log)
            return None
        spool_dir.mkdir(parents=True, exist_ok=True)
        target = spool.spool_file(spool_dir, path.name)
        try:
            durable.move(path, target, sync_folders=False)  # synced once for the batch
        except FileNotFoundError:
            log.info("file_vanished")
            return None
        except OSError as exc:
            self.failures += 1
            log.warning("claim_failed", path=str(path), spool=str(target),
                        error=exc.strerror, reason="the file could not be moved out of the "
                        "outbox into the spool; it stays there and is tried again",
                        fix="flad's user needs write access to the drop folder and to "
                        "the state folder")
            return None
        return target

    def register(self, folder: DropFolder, target: Path) -> Claimed | None:
        """Hash a spooled file and journal it (also used to recover after a crash)."""
        return self.register_many(folder, [target])[0]

    def register_many(self, folder: DropFolder, targets: list[Path]) -> list[Claimed]:
        """Hash spooled files and journal them together: one transaction for a drop."""
        max_bytes = max(a.max_file_bytes for a in self._channel(folder).applications)
        rows: list[Received] = []
        contents: list[bytes | None] = []
        for target in targets:
            drop_name = spool.drop_name(target)
            try:
                digest, size, data = _read_and_hash(target, max_bytes)
            except OSError as exc:
                # unreadable (permissions): keep it journaled with no content; check
                # refuses it
                self.log.warning("file_unreadable", channel=folder.channel,
                                 drop_name=drop_name, error=exc.strerror)
                digest, size, data = "", target.lstat().st_size, None
            rows.append(Received(folder.channel, folder.application, folder.environment,
                                 drop_name, str(target), digest, size))
            contents.append(data)
        ids = self.journal.add_received_many(rows)
        for sub_id, row in zip(ids, rows, strict=True):
            self.log.info("file_claimed", channel=folder.channel, drop_name=row.drop_name,
                          submission=sub_id, size=row.size, sha256=row.sha256 or None)
        return [Claimed(sub_id, folder.channel, data)
                for sub_id, data in zip(ids, contents, strict=True)]

    def _channel(self, folder: DropFolder) -> ChannelConfig:
        channel = self.config.channel(folder.channel)
        assert channel is not None
        return channel

    def _refuse_special(self, folder: DropFolder, path: Path, mode: int, log: Any) -> None:
        """An entry that is not a regular file goes to rejected/ unopened (journal first)."""
        reason = (f"{path.name!r} is {_kind(mode)}, not a regular file: flad only sends "
                  "files that are written into the outbox, and never follows links")
        try:
            spool.reject_entry(self.journal, self._channel(folder), folder.environment,
                               folder.application, path, reason)
        except FileNotFoundError:
            log.info("file_vanished")
        except OSError as exc:
            self.failures += 1
            log.warning("claim_failed", path=str(path), error=exc.strerror, reason=reason)

    def recover(self, folders: Iterable[DropFolder]) -> int:
        """Journal spooled files that a crash left between the move and the journal."""
        count = 0
        for folder in folders:
            spool_dir = self.spool_dir(folder)
            if not spool_dir.is_dir():
                continue
            for entry in sorted(spool_dir.iterdir()):
                if entry.name.startswith(".") or self.journal.by_spool_path(str(entry)):
                    continue
                self.log.warning("spool_recovered", channel=folder.channel, path=str(entry))
                if self.register(folder, entry):
                    count += 1
        return count


def _read_and_hash(path: Path, keep_up_to: int) -> tuple[str, int, bytes | None]:
    """sha256 and size of a spooled file, and its content when it may be sent.

    A file that may be sent is read in one piece (one buffer of its size, no list of
    chunks joined afterwards: that held the content twice, 100 MiB at peak for a 50 MiB
    file); a larger one is only hashed, chunk by chunk. The sha256 of a file of
    BIG_FILE_BYTES or more that is returned whole is left empty: the check computes it
    from that content, and the journal gets it when the file is numbered.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file")
        if st.st_size <= keep_up_to:
            data = f.readall()
            if len(data) <= keep_up_to:
                if len(data) >= BIG_FILE_BYTES:
                    return "", len(data), data
                return hashlib.sha256(data).hexdigest(), len(data), data
            digest = hashlib.sha256(data)  # it grew past the limit while being read
            size = len(data)
            del data
        else:
            digest, size = hashlib.sha256(), 0
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, None


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

    MASK = _IN_MOVED_TO | _IN_CREATE | _IN_MODIFY | _IN_CLOSE_WRITE | _IN_ONLYDIR

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
        for path in self.folders:
            path.mkdir(parents=True, exist_ok=True)

    def start_watching(self) -> None:
        if sys.platform.startswith("linux"):
            try:
                self._observer = _DropEvents(self.folders, self.events, self._overflow)
                return
            except (OSError, AttributeError) as exc:  # no inotify, or out of watches
                self.log.warning("inotify_unavailable", error=str(exc),
                                 fallback="watchdog")
        self._observer = (_INOTIFY(generate_full_events=True)
                          if _INOTIFY is not None else Observer())
        handler = _Events(self.events)
        for path in self.folders:
            self._observer.schedule(handler, str(path), recursive=False)
        self._observer.start()

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
        for path, folder in self.folders.items():
            try:
                entries = list(os.scandir(path))
            except OSError as exc:
                self.log.warning("outbox_unreadable", channel=folder.channel,
                                 path=str(path), error=exc.strerror)
                continue
            for start in range(0, len(entries), CLAIM_BATCH):
                self.consider_many([(Path(e.path), False)
                                    for e in entries[start:start + CLAIM_BATCH]])

    def consider(self, path: Path, *, immediate: bool) -> None:
        self.consider_many([(path, immediate)])

    def consider_many(self, entries: list[tuple[Path, bool]]) -> None:
        """Claim the entries that are whole (arrived by rename, or stable), together."""
        ready: dict[Path, list[Path]] = {}
        for path, immediate in entries:
            folder = self.folders.get(path.parent)
            if folder is None or is_ignored(path.name):
                continue
            try:
                st = path.lstat()
            except OSError:
                self.tracker.forget(path)
                continue
            if stat.S_ISREG(st.st_mode) and not immediate and not self.tracker.ready(path, st):
                continue
            self.tracker.forget(path)
            paths = ready.setdefault(folder.path, [])
            if path not in paths:  # several events for one file: claim it once
                paths.append(path)
        for folder_path, paths in ready.items():
            folder = self.folders[folder_path]
            try:
                claimed = self.claimer.claim_many(folder, paths)
            except Exception as exc:  # one bad entry never stops the watcher
                self.claimer.failures += 1
                self.log.error("claim_failed", channel=folder.channel, path=str(folder.path),
                               drop_name=paths[0].name if len(paths) == 1 else None,
                               files=len(paths), error=str(exc) or type(exc).__name__)
                continue
            for one in claimed:
                if one is not None:
                    self.on_claimed(one)

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
            if time.monotonic() >= next_rescan:
                self.rescan()
                next_rescan = time.monotonic() + self.config.daemon.rescan_seconds
