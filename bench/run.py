"""`make bench`: flad against OpenSSH's own `sftp`, on this machine, in one run.

What it does, in order (details and the meaning of each figure: bench/README.md):

1. generates FLA-like files valid against the stand-in XSD (or, with `--content dmfa`,
   DmfA files built like the DmfA documentation example, checked with the `dmfa`
   profile and the official XSD from ../shared/platform/xsd/ when present): `--small`
   files of about `--small-size` bytes, one of `--big-size` bytes, and `--latency`
   more small ones;
2. starts the test OpenSSH server (tests/sshd.py, a real `sshd` on 127.0.0.1);
3. the floor: prepares the FI, FS and GO files of the same submissions in advance, with
   flad's naming and signing, and uploads them with `sftp -b` over one connection;
4. flad end to end: `flad run -c CONFIG` as a subprocess (production layout: XSD
   validation, FS signing, upload to IN), timed from the drop (by rename) of the files
   to the last GO on the server; then one big file; then single files at idle;
5. with `--content dmfa`, the check alone: flad's check of the big file (hardened
   parse, XSD, every form's employer) against lxml's own parse-and-validate of the
   same bytes, each in a fresh process (best of three), with the check's peak memory;
6. prints every figure, the ratios flad/floor and the targets (MET / NOT MET), and
   writes the whole as JSON into bench/results/ (`<timestamp>.json` and `latest.json`).

It exits 0 whether the targets are met or not: it is a report. It exits 1 only when the
run itself broke (flad did not deliver every file, sftp failed, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flad import journal as journal_mod  # noqa: E402
from flad import naming, signing  # noqa: E402
from tests import configs, declarations  # noqa: E402
from tests.certs import SignerFiles, write_test_signer  # noqa: E402
from tests.harness import STANDIN_XSD, sample  # noqa: E402
from tests.sshd import SshServer, _die_with_parent  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FLAD_MAIN = "import sys; from flad.cli import main; sys.exit(main())"
APP_CODE = "FLAX"
SENDER = "6400"
MIB = 1024 * 1024

# The targets of issue 7.
SMALL_RATIO_MAX = 1.5
BIG_RATIO_MAX = 1.3
LATENCY_P50_MAX = 0.5
LATENCY_P95_MAX = 1.0
CONNECTIONS_MAX = 1
MEMORY_BASE_MIB = 150.0
SINGLE_TIMEOUT = 15.0  # seconds for one file at idle (the target is one)
# The targets of issue 14, for --content dmfa: the check of the big file alone.
CHECK_RATIO_MAX = 1.2  # flad's check / lxml's parse + validate of the same bytes
CHECK_MEMORY_MIB = 150.0  # peak memory of the process that checks it
DMFA_WORKERS_PER_FORM = 100  # the big DmfA: one form per employer of this many workers


class BenchError(Exception):
    """The run itself broke: the figures would mean nothing."""


# -- content -----------------------------------------------------------------------------

_RECORD = (b"  <Training>\n    <WorkerINSS>85073003328</WorkerINSS>\n"
           b"    <TrainingDate>2026-03-16</TrainingDate>\n    <Hours>7.5</Hours>\n"
           b"  </Training>\n")


def fla_file(n: int, size: int, content: str) -> bytes:
    """A stand-in FLA file of about `size` bytes, unique by `n`, valid against the XSD.

    `padded`: tests/harness.py `sample(n, size)` (two trainings, padded with comments).
    `records`: as many <Training> records as fit, as a real declaration would hold.
    """
    if content == "padded":
        return sample(n, size)
    if content == "dmfa":
        return dmfa_file(n, size)
    head, _, tail = sample(n).partition(b"</FLADeclaration>")
    records = max(0, (size - len(head) - len(tail) - 20) // len(_RECORD))
    return head + _RECORD * records + b"</FLADeclaration>" + tail


def dmfa_file(n: int, size: int) -> bytes:
    """A DmfA of about `size` bytes, unique by `n`, built like the documentation example.

    Small files hold one employer's form; a big one holds a form per employer of
    DMFA_WORKERS_PER_FORM workers, as a social secretariat's quarterly DmfA does.
    """
    worker = len(declarations.dmfa_worker(1))
    workers = max(1, size // worker)
    if workers <= DMFA_WORKERS_PER_FORM:
        return declarations.dmfa(workers=workers, reference=f"BENCH {n}")
    forms = max(1, workers // DMFA_WORKERS_PER_FORM)
    return declarations.dmfa(((declarations.NOSS_TEST, "0"),) * forms,
                             workers=DMFA_WORKERS_PER_FORM, reference=f"BENCH {n}")


# -- the check alone: flad against lxml ----------------------------------------------------

_CHECK_SCRIPT = r"""
import json, sys, time
from lxml import etree
from flad import identity, profiles, xmlcheck
path, xsd, mode = sys.argv[1], sys.argv[2] or None, sys.argv[3]
schema = xmlcheck.load_schema(xsd) if xsd else None
data = open(path, "rb").read()
best = None
for _ in range(3):
    t0 = time.perf_counter()
    if mode == "lxml":
        tree = etree.fromstring(data, etree.XMLParser(huge_tree=False, resolve_entities=False))
        ok = schema.validate(tree) if schema is not None else True
        del tree
    else:
        profile = profiles.PROFILES["dmfa"]
        split = bool(xsd) and xmlcheck.forms_validate_alone(xsd, profile)
        doc = xmlcheck.check_document(data, schema=schema, root_element=profile.root_element,
                                      employer_xpath=None, sender_xpath=None, profile=profile,
                                      split_forms=split)
        ok = identity.check_forms(quality="employer", company_id="0123456749",
                                  noss_number="199999934", forms=doc.forms,
                                  mandates=None).ok
    elapsed = time.perf_counter() - t0
    assert ok, mode
    best = elapsed if best is None else min(best, elapsed)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"best_s": best, "peak_mib": hwm / 1024}))
"""


def check_alone(path: Path, xsd: Path | None) -> dict[str, Any]:
    """flad's check of `path` against lxml's parse + validate, each in a fresh process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    out: dict[str, Any] = {"file_mib": path.stat().st_size / MIB,
                           "xsd": str(xsd) if xsd else None}
    for mode in ("lxml", "flad"):
        done = subprocess.run([sys.executable, "-c", _CHECK_SCRIPT, str(path),
                               str(xsd or ""), mode], capture_output=True, text=True,
                              env=env, timeout=600, check=False)
        if done.returncode != 0:
            raise BenchError(f"check ({mode}) failed: {done.stderr.strip()[-400:]}")
        out[mode] = json.loads(done.stdout)
    out["ratio"] = out["flad"]["best_s"] / out["lxml"]["best_s"]
    return out


# -- watching the server's folder ----------------------------------------------------------

_IN_CLOSE_WRITE = 0x008
_IN_CREATE = 0x100
_EVENT = struct.Struct("iIII")


class FolderWatch:
    """inotify on one folder: when each file was created and closed after writing.

    The server's SFTP root is a local folder, so the moment a file is complete on the
    server is the moment sftp-server closes it (IN_CLOSE_WRITE), seen within
    microseconds, without polling.
    """

    def __init__(self, folder: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder),
                                          _IN_CREATE | _IN_CLOSE_WRITE)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder} failed")
        self.events: list[tuple[float, int, str]] = []  # (monotonic, mask, name)
        self._cond = threading.Condition()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._read, name="inotify", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd, self._stop_r], [], [])
            now = time.monotonic()
            if self._stop_r in ready:
                return
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                continue
            found = []
            offset = 0
            while offset < len(buf):
                _wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
                offset += _EVENT.size
                name = buf[offset:offset + length].rstrip(b"\0").decode()
                offset += length
                found.append((now, mask, name))
            with self._cond:
                self.events.extend(found)
                self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def closed_since(self, mark: int, prefix: str = "") -> list[tuple[float, str]]:
        with self._cond:
            return [(t, n) for t, m, n in self.events[mark:]
                    if m & _IN_CLOSE_WRITE and n.startswith(prefix)]

    def first_since(self, mark: int) -> float | None:
        with self._cond:
            return self.events[mark][0] if len(self.events) > mark else None

    def wait_closed(self, mark: int, prefix: str, count: int, timeout: float,
                    what: str = "") -> float:
        """Monotonic time at which the `count`-th file named `prefix...` was closed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                closed = [t for t, m, n in self.events[mark:]
                          if m & _IN_CLOSE_WRITE and n.startswith(prefix)]
                if len(closed) >= count:
                    return closed[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(f"{what or 'upload'}: only {len(closed)} of {count} "
                                     f"{prefix}* files reached the server within {timeout:g}s")
                self._cond.wait(remaining)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(2)
        for fd in (self.fd, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


# -- the flad process, seen from /proc ------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


# -- machine ----------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    import paramiko
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh": ssh_version,
        "paramiko": paramiko.__version__,
    }


# -- the run ----------------------------------------------------------------------------------

@dataclass
class Setup:
    work: Path
    sshd: SshServer
    key: Path
    known_hosts: Path
    signer: SignerFiles
    staging: Path
    small: list[Path] = field(default_factory=list)
    big: Path | None = None
    content: str = "padded"
    singles: list[Path] = field(default_factory=list)

    @property
    def remote_in(self) -> Path:
        return self.sshd.root / "IN"

    def clear_remote(self) -> None:
        for entry in os.scandir(self.remote_in):
            os.unlink(entry.path)


def generate(setup: Setup, args: argparse.Namespace) -> None:
    for kind, count, size, offset in (("small", args.small, args.small_size, 0),
                                      ("single", args.latency, args.small_size, 100_000)):
        folder = setup.staging / kind
        folder.mkdir(parents=True)
        paths = []
        for i in range(count):
            path = folder / f"{kind}-{i:04d}.xml"
            path.write_bytes(fla_file(offset + i, size, args.content))
            paths.append(path)
        if kind == "small":
            setup.small = paths
        else:
            setup.singles = paths
    big = setup.staging / "big" / "big-0000.xml"
    big.parent.mkdir(parents=True)
    big.write_bytes(fla_file(200_000, args.big_size, args.content))
    setup.big = big


# -- the floor: OpenSSH's sftp ------------------------------------------------------------------

def prepare_floor(setup: Setup, files: list[Path], folder: Path) -> Path:
    """FI, FS and GO of each file as flad would name and sign them; returns the batch."""
    signer = signing.load_signer_pem(setup.signer.cert_path, setup.signer.key_path)
    folder.mkdir(parents=True)
    today = datetime.date.today()
    lines = []
    for i, src in enumerate(files, 1):
        names = naming.submission_names(APP_CODE, naming.pad_sender(SENDER), today,
                                        naming.sequence_for(i), "R", 1)
        data = src.read_bytes()
        fi, fs, go = folder / names.fi[0], folder / names.fs[0], folder / names.go
        fi.write_bytes(data)
        fs.write_bytes(signing.make_fs(data, signer))
        go.write_bytes(b"")
        lines += [f"put {p} IN/{p.name}" for p in (fi, fs, go)]
    batch = folder / "batch"
    batch.write_text("\n".join(lines) + "\n")
    return batch


def sftp_command(setup: Setup, batch: Path) -> list[str]:
    s = setup.sshd
    return ["sftp", "-q", "-b", str(batch), "-i", str(setup.key), "-P", str(s.port),
            "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={setup.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            f"{s.username}@{s.host}"]


def run_floor(setup: Setup, watch: FolderWatch, batch: Path, count: int,
              runs: int) -> dict[str, Any]:
    """`runs` uploads of the batch: each one's wall and transfer time."""
    walls, transfers = [], []
    for _ in range(runs):
        setup.clear_remote()
        mark = watch.mark()
        started = time.monotonic()
        done = subprocess.run(sftp_command(setup, batch), capture_output=True, text=True)
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise BenchError(f"sftp failed ({done.returncode}): {done.stderr.strip()}")
        last_go = watch.wait_closed(mark, "GO.", count, 10, "floor")
        first = watch.first_since(mark)
        assert first is not None
        walls.append(wall)
        transfers.append(last_go - first)
    setup.clear_remote()
    return {"runs_wall_s": walls, "runs_transfer_s": transfers}


def merge_floor(*parts: dict[str, Any]) -> dict[str, Any]:
    """The runs made before and after flad's, with their medians."""
    walls = [w for p in parts for w in p["runs_wall_s"]]
    transfers = [t for p in parts for t in p["runs_transfer_s"]]
    return {"wall_s": statistics.median(walls), "transfer_s": statistics.median(transfers),
            "runs_wall_s": walls, "runs_transfer_s": transfers}


# -- flad --------------------------------------------------------------------------------------

def write_config(setup: Setup) -> tuple[Path, dict[str, Any]]:
    base = setup.work / "flad"
    channel = configs.channel(
        base, "acme", port=setup.sshd.port, username=setup.sshd.username, key=setup.key,
        production=True,
        signing={"certificate": setup.signer.cert_path, "private_key": setup.signer.key_path},
        application=[{"name": "fla", "code": APP_CODE, "xsd": STANDIN_XSD,
                      "root_element": "FLADeclaration"}])
    if setup.content == "dmfa":  # the DmfA profile, the official XSD when present
        xsd = declarations.official_xsd("dmfa")
        channel["application"] = [{"name": "fla", "profile": "dmfa", "code": APP_CODE,
                                   **({"xsd": xsd} if xsd is not None else {})}]
        channel["noss_number"] = declarations.NOSS_TEST
    channel["sftp"]["known_hosts"] = setup.known_hosts
    channel["sender_id"] = SENDER
    path = configs.write(base, [channel], log_format="json")
    return path, channel


class Flad:
    """`flad run -c CONFIG` as a subprocess, as systemd would run it."""

    def __init__(self, config: Path, channel: dict[str, Any], log: Path,
                 extra: list[str]) -> None:
        self.config = config
        self.outbox = Path(channel["outbox"])
        self.drop_dir = self.outbox / "production" / "fla"
        self.sent_dir = self.outbox / "sent" / "production"
        self.state = config.parent / "state"
        self.log_path = log
        self._log = log.open("wb")
        # what the `flad` script runs, with this tree's flad first on the path
        command = [*extra, sys.executable, "-c", FLAD_MAIN, "run", "-c", str(config),
                   "--log-format", "json"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        self.started = time.monotonic()
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        self.pid = self.proc.pid

    def target_pid(self, profiled: bool) -> int:
        """The flad process itself: under py-spy, the profiler's child."""
        if not profiled:
            return self.pid
        for _ in range(200):
            for child in _children(self.pid):
                with contextlib.suppress(OSError):
                    command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                    if b"run" in command:
                        return child
            time.sleep(0.05)
        raise BenchError("cannot find the flad process under the profiler")

    def wait_log(self, event: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"flad exited ({self.proc.returncode}) before {event}: "
                                 f"see {self.log_path}")
            if f'"event": "{event}"' in self.log_path.read_text(errors="replace"):
                return time.monotonic()
            time.sleep(0.02)
        raise BenchError(f"flad logged no {event} within {timeout:g}s: see {self.log_path}")

    def stage(self, path: Path) -> Path:
        """Put the file under a temporary name in the drop folder (flad ignores it)."""
        tmp = self.drop_dir / f".{path.name}.tmp"
        os.rename(path, tmp)
        return tmp

    def drop(self, tmp: Path) -> None:
        """The polite drop: rename the temporary name to the final one, in the folder."""
        os.rename(tmp, tmp.with_name(tmp.name[1:-len(".tmp")]))

    def archived(self) -> int:
        return sum(1 for e in os.scandir(self.sent_dir) if e.name.startswith("FI.")) \
            if self.sent_dir.is_dir() else 0

    def wait_archived(self, count: int, timeout: float) -> None:
        """Until `count` FI files are archived under sent/: flad is idle again."""
        deadline = time.monotonic() + timeout
        while self.archived() < count:
            if time.monotonic() > deadline:
                raise BenchError(f"flad archived {self.archived()} of {count} files within "
                                 f"{timeout:g}s: see {self.log_path}")
            time.sleep(0.01)

    def stop(self, pid: int | None = None) -> int:
        """SIGTERM to flad (not to a profiler in front of it, which then writes out)."""
        target = pid or self.pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if target != self.pid:  # flad under a profiler that died first
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
        self._log.close()
        return self.proc.returncode

    def log_events(self, event: str) -> int:
        return self.log_path.read_text(errors="replace").count(f'"event": "{event}"')

    def phases(self, size: int, dropped_at: float) -> dict[str, float]:
        """Where the time of the one file of `size` bytes went, from flad's own log.

        `dropped_at` is the wall-clock time of its rename (flad's log stamps are UTC
        wall-clock times). Seconds from one step to the next: `claim` (drop to
        journaled), `check` (to numbered: hash, parse, XSD, signature), `queue` (to the
        worker's start of its upload), `upload` (FI and FS, then the GO).
        """
        marks: dict[str, float] = {}
        sub_id = None
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "file_claimed" and entry.get("size") == size:
                    sub_id = entry.get("submission")
                if sub_id is None or entry.get("submission") != sub_id:
                    continue
                when = datetime.datetime.fromisoformat(
                    entry["timestamp"].replace("Z", "+00:00")).timestamp()
                marks.setdefault(entry["event"], when)
        steps = [("claim", "file_claimed"), ("check", "submission_prepared"),
                 ("queue", "upload_started"), ("upload", "go_sent")]
        out: dict[str, float] = {}
        previous = dropped_at
        for name, event in steps:
            if event not in marks:
                return {}
            out[name] = marks[event] - previous
            previous = marks[event]
        return out


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _ratio(value: float | None, floor: float) -> float | None:
    return None if value is None else value / floor


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run_flad(setup: Setup, watch: FolderWatch, args: argparse.Namespace,
             extra: list[str]) -> dict[str, Any]:
    """flad's figures; what went wrong (a file never sent) is listed under `failures`."""
    config, channel = write_config(setup)
    logins_before = setup.sshd.connection_count()
    flad = Flad(config, channel, setup.work / "flad.log", extra)
    out: dict[str, Any] = {"failures": []}
    failures: list[str] = out["failures"]
    pid: int | None = None
    total = 0  # files dropped so far
    delivered = 0  # files whose GO reached the server

    def settle(what: str, timeout: float) -> None:
        """Until flad has archived every file it delivered (it is idle again)."""
        try:
            flad.wait_archived(delivered, timeout)
        except BenchError as exc:
            failures.append(f"{what}: {exc}")

    try:
        flad.drop_dir.mkdir(parents=True, exist_ok=True)
        ready = flad.wait_log("service_started", 30)
        connected = flad.wait_log("ssh_connected", 30)
        pid = flad.target_pid(bool(extra) and args.profile == "py-spy")
        out["startup_s"] = ready - flad.started
        out["connected_s"] = connected - flad.started
        time.sleep(0.5)  # let start-up settle: the figures below are the steady state

        # many small files, dropped at once
        n = len(setup.small)
        staged = [flad.stage(path) for path in setup.small]
        time.sleep(0.3)
        cpu0, mark = cpu_seconds(pid), watch.mark()
        t0 = time.monotonic()
        for tmp in staged:
            flad.drop(tmp)
        total += n
        try:
            out["small_s"] = watch.wait_closed(mark, "GO.", n, args.timeout,
                                               "small files") - t0
            out["small_first_go_s"] = watch.wait_closed(mark, "GO.", 1, 1) - t0
            out["small_files_per_s"] = n / out["small_s"]
        except BenchError as exc:
            failures.append(str(exc))
        delivered += len(watch.closed_since(mark, "GO."))
        settle("small files", args.timeout / 2)
        out["small_cpu_s_per_file"] = (cpu_seconds(pid) - cpu0) / n
        time.sleep(0.3)

        # one big file
        assert setup.big is not None
        big_size = setup.big.stat().st_size
        staged = [flad.stage(setup.big)]
        time.sleep(0.3)
        cpu0, mark = cpu_seconds(pid), watch.mark()
        t0, dropped_at = time.monotonic(), time.time()
        flad.drop(staged[0])
        total += 1
        try:
            out["big_s"] = watch.wait_closed(mark, "GO.", 1, args.timeout, "big file") - t0
            delivered += 1
        except BenchError as exc:
            failures.append(str(exc))
        settle("big file", args.timeout / 2)
        out["big_cpu_s"] = cpu_seconds(pid) - cpu0
        out["big_phases_s"] = flad.phases(big_size, dropped_at)
        time.sleep(0.3)

        # single files at idle
        latencies = []
        cpu0 = cpu_seconds(pid)
        missed = 0
        for path in setup.singles:
            tmp = flad.stage(path)
            time.sleep(args.idle)
            mark = watch.mark()
            t0 = time.monotonic()
            flad.drop(tmp)
            total += 1
            try:
                latencies.append(watch.wait_closed(mark, "GO.", 1, SINGLE_TIMEOUT,
                                                   f"single file {path.name}") - t0)
                delivered += 1
            except BenchError as exc:
                failures.append(str(exc))
                missed += 1
                if missed >= 2:
                    failures.append("single files: gave up after two files never sent")
                    break
            settle(f"single file {path.name}", SINGLE_TIMEOUT)
        out["single_cpu_s_per_file"] = (cpu_seconds(pid) - cpu0) / max(1, len(latencies))
        if latencies:
            out["latency"] = {"p50_s": percentile(latencies, 50),
                              "p95_s": percentile(latencies, 95),
                              "min_s": min(latencies), "max_s": max(latencies),
                              "samples_s": [round(v, 4) for v in latencies]}
        out["peak_rss_mib"] = status_kib(pid, "VmHWM") / 1024
        out["rss_end_mib"] = status_kib(pid, "VmRSS") / 1024
    finally:
        code = flad.stop(pid)
    out["exit_code"] = code
    out["ssh_connections"] = setup.sshd.connection_count() - logins_before
    out["ssh_connected_events"] = flad.log_events("ssh_connected")
    db = journal_mod.Journal(flad.state / "journal.sqlite3", readonly=True)
    try:
        subs = db.submissions()
    finally:
        db.close()
    states: dict[str, int] = {}
    for sub in subs:
        states[sub.state] = states.get(sub.state, 0) + 1
        if sub.state != journal_mod.SENT:
            failures.append(f"{sub.drop_name} ended {sub.state}: {sub.error or 'no error'}")
    out["journal_states"] = states
    if len(subs) != total:
        failures.append(f"{total} files dropped, {len(subs)} in the journal")
    remote = {prefix: sum(1 for e in os.scandir(setup.remote_in) if e.name.startswith(prefix))
              for prefix in ("FI.", "FS.", "GO.")}
    out["server_files"] = remote
    sent = [sub for sub in subs if sub.state == journal_mod.SENT]
    cert = signing.load_certificates(setup.signer.cert_path)[0]
    for sub in {id(x): x for x in sent[:1] + sorted(sent, key=lambda x: x.size)[-1:]}.values():
        assert sub.fi_name and sub.fs_name
        try:  # the FI is the file dropped, byte for byte, and its FS signs it
            signing.verify_fs((setup.remote_in / sub.fi_name).read_bytes(),
                              (setup.remote_in / sub.fs_name).read_bytes(), certificate=cert)
        except (OSError, signing.SigningError) as exc:
            failures.append(f"{sub.fi_name}: the FS on the server does not verify: {exc}")
    if set(remote.values()) != {states.get(journal_mod.SENT, 0)}:
        failures.append(f"the server holds {remote} for {states.get(journal_mod.SENT, 0)} "
                        "submissions sent")
    return out


# -- report --------------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    value: float | None
    limit: float
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value is not None and self.value <= self.limit

    def line(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.3g}{self.unit}"
        verdict = "MET" if self.met else "NOT MET"
        return f"  {verdict:8} {self.name}: {shown} (limit {self.limit:g}{self.unit})"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "limit": self.limit,
                "unit": self.unit, "met": self.met}


def targets(result: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    r, f = result["ratios"], result["flad"]
    latency = f.get("latency", {})
    return [
        Target(f"{args.small} small files, flad/floor", r["small"], SMALL_RATIO_MAX, "x"),
        Target(f"{args.big_size / MIB:g} MiB file, flad/floor", r["big"], BIG_RATIO_MAX, "x"),
        Target("single-file latency p50", latency.get("p50_s"), LATENCY_P50_MAX, " s"),
        Target("single-file latency p95", latency.get("p95_s"), LATENCY_P95_MAX, " s"),
        Target("SSH connections opened by flad", f["ssh_connections"], CONNECTIONS_MAX),
        Target("peak memory of flad", round(f["peak_rss_mib"], 1),
               MEMORY_BASE_MIB + 2 * args.big_size / MIB, " MiB"),
        *([Target("DmfA check, flad/lxml parse+validate", round(c["ratio"], 3),
                  CHECK_RATIO_MAX, "x"),
           Target("peak memory of the DmfA check", round(c["flad"]["peak_mib"], 1),
                  CHECK_MEMORY_MIB, " MiB")] if (c := result.get("check")) else []),
    ]


def _n(value: float | None, fmt: str = ".3f", scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, fmt)


def report(result: dict[str, Any], checks: list[Target]) -> str:
    m, fl, f, r = result["machine"], result["floor"], result["flad"], result["ratios"]
    p = result["params"]
    lat = f.get("latency", {})
    lines = [
        "",
        f"flad bench {result['timestamp']}  ({p['content']} content)",
        f"machine: {m['cores']} cores ({m['cores_usable']} usable), {m['cpu_model']}, "
        f"Linux {m['kernel']}, Python {m['python']}, paramiko {m['paramiko']}, "
        f"{m['openssh']}",
        "",
        f"floor, OpenSSH sftp -b over one connection (median of {p['floor_runs']} runs, "
        "before and after flad's):",
        f"  {p['small']} x {p['small_size'] / 1024:g} KiB as FI+FS+GO: "
        f"{fl['small']['transfer_s']:.3f} s transfer, {fl['small']['wall_s']:.3f} s with "
        "connect",
        f"  1 x {p['big_size'] / MIB:g} MiB as FI+FS+GO: {fl['big']['transfer_s']:.3f} s "
        f"transfer, {fl['big']['wall_s']:.3f} s with connect",
        "",
        "flad run (subprocess, XSD validation, FS signing, journal, archive):",
        f"  start-up to READY {f['startup_s']:.2f} s, SSH connected after "
        f"{f['connected_s']:.2f} s",
        f"  {p['small']} small files, drop to last GO: {_n(f.get('small_s'))} s "
        f"({_n(f.get('small_files_per_s'), '.0f')} files/s, first GO after "
        f"{_n(f.get('small_first_go_s'))} s), "
        f"CPU {_n(f.get('small_cpu_s_per_file'), '.1f', 1000)} ms/file",
        f"  {p['big_size'] / MIB:g} MiB file, drop to GO: {_n(f.get('big_s'))} s, "
        f"CPU {_n(f.get('big_cpu_s'), '.2f')} s",
    ]
    if f.get("big_phases_s"):
        lines.append("    from flad's log: " + ", ".join(
            f"{name} {seconds:.3f} s" for name, seconds in f["big_phases_s"].items()))
    if lat:
        lines.append(
            f"  single files at idle ({len(lat['samples_s'])}), rename to GO: "
            f"p50 {lat['p50_s']:.3f} s, p95 {lat['p95_s']:.3f} s, min {lat['min_s']:.3f} s, "
            f"max {lat['max_s']:.3f} s, CPU {f['single_cpu_s_per_file'] * 1000:.1f} ms/file")
    lines += [
        f"  peak memory (VmHWM) {f['peak_rss_mib']:.1f} MiB, at the end {f['rss_end_mib']:.1f}"
        " MiB",
        f"  SSH connections opened: {f['ssh_connections']} (sshd log), "
        f"{f['ssh_connected_events']} (flad log)",
        "",
        f"ratios flad/floor: small files {_n(r['small'], '.2f')}x, big file "
        f"{_n(r['big'], '.2f')}x (floor = sftp transfer time, without its connection set-up)",
        *([f"the check alone ({c['file_mib']:.1f} MiB DmfA, XSD {c['xsd'] or 'none'}, "
           "best of 3, fresh processes):",
           f"  lxml parse + validate {c['lxml']['best_s']:.3f} s (peak "
           f"{c['lxml']['peak_mib']:.0f} MiB); flad check {c['flad']['best_s']:.3f} s "
           f"(peak {c['flad']['peak_mib']:.0f} MiB): {c['ratio']:.2f}x", ""]
          if (c := result.get("check")) else []),
        "",
        "targets:",
        *(t.line() for t in checks),
        "",
    ]
    if f["failures"]:
        lines += ["FAILED: flad did not deliver everything; the figures above are partial:",
                  *(f"  - {line}" for line in f["failures"]), ""]
    return "\n".join(lines)


def save(result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    path = RESULTS / f"{result['timestamp']}.json"
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=300, help="small files dropped at once")
    p.add_argument("--small-size", type=int, default=20 * 1024, help="bytes per small file")
    p.add_argument("--big-size", type=int, default=50 * MIB, help="bytes of the big file")
    p.add_argument("--latency", type=int, default=50, help="single files dropped at idle")
    p.add_argument("--idle", type=float, default=0.2,
                   help="seconds flad stays idle between two single files")
    p.add_argument("--content", choices=("padded", "records", "dmfa"), default="padded",
                   help="padded: tests/harness.py sample() padded with comments; "
                   "records: filled with <Training> records (parse and XSD cost more); "
                   "dmfa: DmfA files with the dmfa profile and the official XSD when "
                   "../shared/platform is there, and the check measured against lxml")
    p.add_argument("--floor-runs", type=int, default=4,
                   help="sftp runs, half before flad's and half after (the median is taken)")
    p.add_argument("--timeout", type=float, default=60,
                   help="seconds to wait for a phase's files on the server")
    p.add_argument("--profile", choices=("py-spy", "pyinstrument"),
                   help="run flad under a profiler (install it into .venv); the profile "
                   "is written next to the results")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, journal)")
    return p.parse_args(argv)


def profiler_prefix(args: argparse.Namespace, stamp: str) -> tuple[list[str], Path | None]:
    if args.profile is None:
        return [], None
    RESULTS.mkdir(exist_ok=True)
    bin_dir = Path(sys.executable).parent
    if args.profile == "py-spy":
        out = RESULTS / f"{stamp}.py-spy.txt"  # collapsed stacks, one per line
        return [str(bin_dir / "py-spy"), "record", "--threads", "--format", "raw",
                "-r", "200", "-o", str(out), "--"], out
    out = RESULTS / f"{stamp}.pyinstrument.html"
    return [str(bin_dir / "pyinstrument"), "-r", "html", "-o", str(out)], out


@contextlib.contextmanager
def workdir(args: argparse.Namespace) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="flad-bench-"))
    try:
        yield path
    finally:
        if args.keep:
            print(f"work folder kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def step(label: str, fn: Callable[[], Any]) -> Any:
    print(f"... {label}", flush=True)
    started = time.monotonic()
    value = fn()
    print(f"    done in {time.monotonic() - started:.1f} s", flush=True)
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    began = time.monotonic()
    profile_out: Path | None = None
    with workdir(args) as work:
        sshd = SshServer(workdir=work / "sshd", sftp_log_level="ERROR")
        key = work / "client_key"
        setup = Setup(work=work, sshd=sshd, key=key, known_hosts=work / "known_hosts",
                      signer=write_test_signer(work / "signer"), staging=work / "staging",
                      content=args.content)
        step("generating files", lambda: generate(setup, args))
        check = None
        if args.content == "dmfa" and setup.big is not None:
            big = setup.big
            try:
                check = step("the check alone: flad and lxml", lambda: check_alone(
                    big, declarations.official_xsd("dmfa")))
            except BenchError as exc:
                print(f"bench failed: {exc}", file=sys.stderr)
                return 1
        try:
            sshd.start()
            shutil.copy(sshd.client_key_path, key)
            os.chmod(key, 0o600)
            sshd.write_known_hosts(setup.known_hosts)
            watch = FolderWatch(setup.remote_in)
            try:
                small_batch = prepare_floor(setup, setup.small, work / "floor-small")
                big_batch = prepare_floor(setup, [setup.big] if setup.big else [],
                                          work / "floor-big")
                before = (args.floor_runs + 1) // 2  # the rest after flad: drift shows
                after = args.floor_runs - before
                floor_small = [step("floor: sftp, small files", lambda: run_floor(
                    setup, watch, small_batch, len(setup.small), before))]
                floor_big = [step("floor: sftp, big file", lambda: run_floor(
                    setup, watch, big_batch, 1, before))]
                prefix, profile_out = profiler_prefix(args, stamp)
                flad = step("flad run", lambda: run_flad(setup, watch, args, prefix))
                setup.clear_remote()
                if after:
                    floor_small.append(step("floor again: sftp, small files", lambda: run_floor(
                        setup, watch, small_batch, len(setup.small), after)))
                    floor_big.append(step("floor again: sftp, big file", lambda: run_floor(
                        setup, watch, big_batch, 1, after)))
                floor = {"small": merge_floor(*floor_small), "big": merge_floor(*floor_big)}
            finally:
                watch.close()
        except BenchError as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            log = work / "flad.log"
            errors = [line for line in (log.read_text(errors="replace").splitlines()
                                        if log.exists() else [])
                      if '"level": "error"' in line]
            for line in errors[-5:]:
                print(f"  flad: {line[:400]}", file=sys.stderr)
            args.keep = True
            return 1
        finally:
            sshd.stop()
    result: dict[str, Any] = {
        "timestamp": stamp,
        "machine": machine(),
        "params": {k: v for k, v in vars(args).items()
                   if k not in ("no_save", "keep", "json", "profile")},
        "floor": floor,
        "flad": flad,
        "ratios": {
            "small": _ratio(flad.get("small_s"), floor["small"]["transfer_s"]),
            "big": _ratio(flad.get("big_s"), floor["big"]["transfer_s"]),
            "small_vs_wall": _ratio(flad.get("small_s"), floor["small"]["wall_s"]),
            "big_vs_wall": _ratio(flad.get("big_s"), floor["big"]["wall_s"]),
        },
        "duration_s": round(time.monotonic() - began, 1),
    }
    if check is not None:
        result["check"] = check
    checks = targets(result, args)
    result["targets"] = [t.as_dict() for t in checks]
    if profile_out is not None:
        result["profile"] = str(profile_out)
    print(report(result, checks))
    if not args.no_save:
        print(f"results: {save(result)}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if profile_out is not None:
        print(f"profile: {profile_out}")
    print(f"bench took {result['duration_s']:.0f} s")
    return 1 if flad["failures"] else 0  # targets not met are a result; a lost file is not


if __name__ == "__main__":
    sys.exit(main())
