"""`make bench`'s WAN run: flad and OpenSSH's `sftp` across a round trip of tens of ms.

The platform is on the other side of the internet. Both clients go through
`delayproxy.DelayProxy` (the delay each way, bytes in order) to the same test `sshd`:

- uploads: N submissions (FI, FS, GO) in the production layout;
- replies: N reply sets (FO, FS, GO) fetched, delivered and removed
  (`flad replies` against `sftp -b` with a get and an rm per file);
- single-file latency, the service running and idle: drop to GO on the server;
- the same while the service fetches a backlog of reply sets.

Targets (issue 20): replies at most 1.5x flad's own upload of as many submissions;
p95 latency during the backlog under 1 s. Results go to bench/results/wan-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.delayproxy import DelayProxy  # noqa: E402
from bench.run import (  # noqa: E402
    APP_CODE,
    RESULTS,
    SENDER,
    BenchError,
    Flad,
    FolderWatch,
    Setup,
    percentile,
    prepare_floor,
    write_config,
)
from flad import naming  # noqa: E402
from tests.certs import write_test_signer  # noqa: E402
from tests.harness import sample  # noqa: E402
from tests.replysets import acrf  # noqa: E402
from tests.sshd import SshServer  # noqa: E402

REPLIES_RATIO_MAX = 1.5
BACKLOG_P95_MAX_S = 1.0


def sftp_through(setup: Setup, port: int, batch: Path) -> list[str]:
    return ["sftp", "-q", "-b", str(batch), "-i", str(setup.key), "-P", str(port),
            "-F", "/dev/null", "-o", f"UserKnownHostsFile={setup.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            f"{setup.sshd.username}@127.0.0.1"]


def timed(command: list[str], what: str) -> float:
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise BenchError(f"{what} failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-400:]}")
    return time.monotonic() - started


def flad_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from flad.cli import main; sys.exit(main())",
            *args]


def put_reply_sets(root: Path, first: int, count: int) -> list[str]:
    """`count` receipt sets in OUT, as the platform writes them (GO last)."""
    today = datetime.date.today().strftime("%Y%m%d")
    names = []
    for n in range(first, first + count):
        key = f"ACRF.999999.{today}.{naming.sequence_for(n)}.R"
        for kind, data in (("FO", acrf(f"GO.{APP_CODE}.00{SENDER}.{today}.{n:05d}.R.1")),
                           ("FS", b""), ("GO", b"")):
            (root / "OUT" / f"{kind}.{key}").write_bytes(data)
            names.append(f"{kind}.{key}")
    return names


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sshd = SshServer(workdir=work / "sshd", sftp_log_level="ERROR")
    key = work / "client_key"
    setup = Setup(work=work, sshd=sshd, key=key, known_hosts=work / "known_hosts",
                  signer=write_test_signer(work / "signer"), staging=work / "staging")
    out: dict[str, Any] = {"rtt_ms": args.rtt_ms, "count": args.count,
                           "backlog": args.backlog}
    sshd.start()
    try:
        shutil.copy(sshd.client_key_path, key)
        os.chmod(key, 0o600)
        with DelayProxy(sshd.port, args.rtt_ms) as proxy:
            sshd.write_known_hosts(setup.known_hosts, port=proxy.port)
            files = []
            (setup.staging / "up").mkdir(parents=True)
            for i in range(args.count):
                path = setup.staging / "up" / f"up-{i:04d}.xml"
                path.write_bytes(sample(300_000 + i, 20 * 1024))
                files.append(path)

            # uploads: sftp, then flad --once
            batch = prepare_floor(setup, files, work / "floor-up")
            out["sftp_upload_s"] = timed(sftp_through(setup, proxy.port, batch), "sftp upload")
            setup.clear_remote()
            config, channel = write_config(setup)
            channel_port(config, proxy.port)
            drop = Path(channel["outbox"]) / "production" / "fla"
            drop.mkdir(parents=True, exist_ok=True)
            watch = FolderWatch(setup.remote_in)
            try:
                for path in files:
                    shutil.copy(path, drop / f".{path.name}.tmp")
                    os.rename(drop / f".{path.name}.tmp", drop / path.name)
                mark = watch.mark()
                timed(flad_command("run", "-c", str(config), "--once", "--max-wait", "60"),
                      "flad run --once")
                first = watch.first_since(mark)
                last = watch.wait_closed(mark, "GO.", args.count, 5, "flad upload")
                out["flad_upload_s"] = last - (first or last)
            finally:
                watch.close()

            # replies: sftp get + rm per file, then flad replies
            (work / "got").mkdir()
            names = put_reply_sets(sshd.root, 1, args.count)
            lines = [f"get OUT/{n} {work / 'got' / n}" for n in names]
            lines += [f"rm OUT/{n}" for n in names]
            (work / "replies.batch").write_text("\n".join(lines) + "\n")
            out["sftp_replies_s"] = timed(sftp_through(setup, proxy.port,
                                                       work / "replies.batch"), "sftp replies")
            put_reply_sets(sshd.root, args.count + 1, args.count)
            started = time.monotonic()
            done = subprocess.run(flad_command("replies", "-c", str(config)),
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
            out["flad_replies_process_s"] = time.monotonic() - started
            if done.returncode != 0:
                raise BenchError(f"flad replies failed ({done.returncode}): "
                                 f"{done.stderr.strip()[-400:]}")
            out["flad_replies_s"] = connected_to_last(done.stderr, "reply_removed")
            if os.listdir(sshd.root / "OUT"):
                raise BenchError("flad replies left sets on the server")

            # single-file latency, idle and behind a backlog of reply sets
            out["latency_idle_s"] = latencies(setup, config, channel, args.latency, 0)
            out["latency_backlog_s"] = latencies(setup, config, channel, args.latency,
                                                 args.backlog)
    finally:
        sshd.stop()
    return out


def connected_to_last(log: str, event: str) -> float:
    """Seconds from `ssh_connected` to the last `event` in a JSON log: the work over the
    link, as the upload figure counts it (no process start, no SSH handshake)."""
    times: dict[str, list[float]] = {"ssh_connected": [], event: []}
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") in times:
            stamp = datetime.datetime.fromisoformat(str(entry["timestamp"]))
            times[str(entry["event"])].append(stamp.timestamp())
    if not times["ssh_connected"] or not times[event]:
        raise BenchError(f"no ssh_connected or {event} in flad's log")
    return max(times[event]) - min(times["ssh_connected"])


def channel_port(config: Path, port: int) -> None:
    """Point the bench's configuration at the proxy instead of sshd."""
    text = config.read_text()
    lines = [f"port = {port}" if line.startswith("port = ") else line
             for line in text.splitlines()]
    config.write_text("\n".join(lines) + "\n")


def latencies(setup: Setup, config: Path, channel: dict[str, Any], count: int,
              backlog: int) -> list[float]:
    """Drop to GO, one file at a time, the service running (with `backlog` sets waiting)."""
    setup.clear_remote()
    if backlog:
        put_reply_sets(setup.sshd.root, 10_000, backlog)
    flad = Flad(config, channel, setup.work / f"flad-latency-{backlog}.log", [])
    watch = FolderWatch(setup.remote_in)
    samples: list[float] = []
    try:
        flad.wait_log("service_started", 30)
        flad.wait_log("ssh_connected", 30)
        for i in range(count):
            path = setup.staging / f"single-{backlog}-{i}.xml"
            path.write_bytes(sample(400_000 + backlog + i, 20 * 1024))
            tmp = flad.drop_dir / f".{path.name}.tmp"
            shutil.copy(path, tmp)
            mark = watch.mark()
            dropped = time.monotonic()
            flad.drop(tmp)
            samples.append(watch.wait_closed(mark, "GO.", 1, 120, "single file") - dropped)
            time.sleep(0.2)
    finally:
        watch.close()
        flad.stop()
    return samples


def report(out: dict[str, Any]) -> tuple[str, bool]:
    ratio = out["flad_replies_s"] / out["flad_upload_s"] if out["flad_upload_s"] else None
    backlog_p95 = percentile(out["latency_backlog_s"], 95)
    met_replies = ratio is not None and ratio <= REPLIES_RATIO_MAX
    met_backlog = backlog_p95 < BACKLOG_P95_MAX_S
    lines = [
        f"WAN run: {out['rtt_ms']:g} ms round trip, {out['count']} files or reply sets",
        f"  uploads   sftp {out['sftp_upload_s']:.2f} s   flad {out['flad_upload_s']:.2f} s",
        f"  replies   sftp {out['sftp_replies_s']:.2f} s   flad {out['flad_replies_s']:.2f} s"
        f"   (flad replies / flad uploads {ratio:.2f}x, target <= {REPLIES_RATIO_MAX}x: "
        f"{'MET' if met_replies else 'NOT MET'})",
        f"            flad replies as a whole process (start, SSH handshake, listing, "
        f"fetch, delivery, removal) {out['flad_replies_process_s']:.2f} s",
        f"  latency idle      p50 {percentile(out['latency_idle_s'], 50):.3f} s   "
        f"p95 {percentile(out['latency_idle_s'], 95):.3f} s",
        f"  latency backlog of {out['backlog']} sets   "
        f"p50 {percentile(out['latency_backlog_s'], 50):.3f} s   "
        f"p95 {backlog_p95:.3f} s   (target p95 < {BACKLOG_P95_MAX_S:g} s: "
        f"{'MET' if met_backlog else 'NOT MET'})",
    ]
    out["targets"] = {"replies_vs_uploads": ratio, "replies_met": met_replies,
                      "backlog_p95_s": backlog_p95, "backlog_met": met_backlog,
                      "latency_idle_median_s": statistics.median(out["latency_idle_s"])}
    return "\n".join(lines), met_replies and met_backlog


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rtt-ms", type=float, default=20.0, help="round trip added (default 20)")
    p.add_argument("--count", type=int, default=100, help="submissions and reply sets")
    p.add_argument("--latency", type=int, default=10, help="single files per latency run")
    p.add_argument("--backlog", type=int, default=1000,
                   help="reply sets waiting while the latency is measured (default 1000)")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="flad-bench-wan-"))
    try:
        out = run(args, work)
    except BenchError as exc:
        print(f"WAN bench failed: {exc} (work folder kept: {work})", file=sys.stderr)
        return 1
    text, _met = report(out)
    print(text)
    if not args.no_save:
        stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"wan-{stamp}.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"results: {path}")
    shutil.rmtree(work, ignore_errors=True)
    return 0  # a target not met is a result, not a failure


if __name__ == "__main__":
    sys.exit(main())
