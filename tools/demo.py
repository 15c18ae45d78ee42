"""`make demo`: the whole loop on this machine, against the local sandbox platform.

Creates demo keys and a demo signing certificate under ./demo/, starts `flad sandbox`
on 127.0.0.1, writes a demo configuration, starts `flad run`, drops sample files
(valid ones, one asking the platform for anomalies, one broken), waits until every
valid file has its receipt and notification, prints `flad status` and the inbox, and
stops everything it started. Nothing here talks to the real platform.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("FLAD_DEMO_DIR", ROOT / "demo")).resolve()
DATA = ROOT / "flad" / "data"
COMPANY = "0123456749"  # a valid enterprise number, made up for the demo
TIMEOUT = 45.0


def flad(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flad.cli", *args], text=True,
                          capture_output=True, timeout=60, check=False, **kw)  # type: ignore[call-overload]


def shown(path: Path) -> str:
    """A path as the person who ran `make demo` types it: relative to where they are."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


def make_keys() -> tuple[Path, Path, Path, Path]:
    keys = DEMO / "keys"
    keys.mkdir(parents=True)
    ssh = ed25519.Ed25519PrivateKey.generate()
    ssh_path = keys / "demo_ed25519"
    private(ssh_path, ssh.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption()))
    pub_path = keys / "demo_ed25519.pub"
    pub_path.write_bytes(ssh.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" demo\n")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         "Demo Company (flad demo only)"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Demo"),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "BE")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = keys / "signing-cert.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = keys / "signing-key.pem"
    private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return ssh_path, pub_path, cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(port: int, ssh_key: Path, cert: Path, key: Path) -> Path:
    platform = DEMO / "platform"
    text = f'''# flad demo configuration (tools/demo.py): the local sandbox, not the platform
[daemon]
state_dir = "state"
log_format = "json"
settle_seconds = 0.5
rescan_seconds = 2

[[channel]]
name = "demo"
quality = "employer"
company_id = "{COMPANY}"
sender_id = "6400"
outbox = "outbox"
inbox = "inbox"
production = true
reply_trust = "{platform / 'sandbox-cert.pem'}"
poll_seconds = 1

[channel.sftp]
host = "127.0.0.1"
port = {port}
username = "demo"
private_key = "{ssh_key}"
known_hosts = "known_hosts"

[channel.signing]
certificate = "{cert}"
private_key = "{key}"

[[channel.application]]
name = "fla"
code = "FLAX"   # a stand-in code: the FLA code is in the FLA batch manual
xsd = "{DATA / 'standin-fla.xsd'}"
root_element = "FLADeclaration"
'''
    path = DEMO / "flad.toml"
    path.write_text(text)
    return path


def samples() -> dict[tuple[str, str], bytes]:
    base = (DATA / "sample-fla.xml").read_bytes()
    anomalies = base.replace(b"<Hours>7.5</Hours>",
                             b"<Hours>7.5</Hours><Anomaly>B:FLA-00012:Hours</Anomaly>", 1)
    anomalies = anomalies.replace(b"<Hours>3.25</Hours>",
                                  b"<Hours>3.25</Hours><Anomaly>W:FLA-00100</Anomaly>", 1)
    return {
        ("production", "trainings-march.xml"): base,
        ("production", "trainings-april.xml"): base.replace(b"2026-03-", b"2026-04-"),
        ("production", "trainings-with-anomalies.xml"): anomalies,
        ("test", "trial-run.xml"): base.replace(b"2026-03-", b"2026-05-"),
        ("test", "broken-export.xml"): base[: len(base) // 2],  # cut off: not well-formed
    }


def drop(outbox: Path, env: str, name: str, data: bytes) -> None:
    folder = outbox / env / "fla"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, folder / name)  # the polite way: write, then rename


def wait_for_loop(config: Path, expected: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + TIMEOUT
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        done = flad("status", "-c", str(config), "--json")
        rows = json.loads(done.stdout or "[]")
        finished = [r for r in rows if r["state"] in ("notified", "rejected", "refused")]
        if len(rows) == expected and len(finished) == expected:
            return rows
        time.sleep(0.5)
    return rows


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    ssh_key, ssh_pub, cert, key = make_keys()
    port = free_port()
    sandbox = service = None
    try:
        print(f"== starting the sandbox platform on 127.0.0.1:{port}")
        ready = DEMO / "sandbox.ready"
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "flad.cli", "sandbox", "--root", str(DEMO / "platform"),
             "--port", str(port), "--authorized-key", str(ssh_pub), "--client-cert", str(cert),
             "--notify-delay", "1", "--xsd", str(DATA / "standin-fla.xsd"),
             "--sender-id", "6400", "--ready-file", str(ready)],
            stdout=(DEMO / "sandbox.log").open("wb"),
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if sandbox.poll() is not None or time.monotonic() > deadline:
                print((DEMO / "sandbox.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.05)
        config = write_config(port, ssh_key, cert, key)
        print(f"== the demo's configuration, {shown(config)} (the sandbox, not the platform)")
        for line in config.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                print(f"   {line}")
        print("== flad trust-host (the demo trusts the sandbox's key without asking)")
        print(flad("trust-host", "-c", str(config), "demo", "--yes").stdout.strip())
        check = flad("check", "-c", str(config))
        print("== flad check:", check.stdout.strip().splitlines()[-1])
        if check.returncode != 0:
            print(check.stdout, check.stderr, file=sys.stderr)
            return 1

        print("== starting flad run")
        service = subprocess.Popen([sys.executable, "-m", "flad.cli", "run", "-c", str(config)],
                                   stdout=(DEMO / "flad.log").open("wb"),
                                   stderr=subprocess.STDOUT)
        files = samples()
        time.sleep(1.0)
        for (env, name), data in files.items():
            print(f"   drop {env}/fla/{name}")
            drop(DEMO / "outbox", env, name, data)
        print("== waiting for receipts and notifications")
        rows = wait_for_loop(config, len(files))
        stop(service)
        stop(sandbox)

        print("\n== flad status")
        print(flad("status", "-c", str(config)).stdout)
        print("== inbox (replies from the platform, GO last in each set)")
        for env in ("production", "test"):
            folder = DEMO / "inbox" / env
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                print(f"   inbox/{env}/{path.name}  ({path.stat().st_size} bytes)")
        print("== rejected by flad before sending")
        for path in sorted((DEMO / "outbox" / "rejected").rglob("*.reason.txt")):
            print(f"   {path.relative_to(DEMO)}: {path.read_text().strip()}")

        states = {str(r["drop_name"]): str(r["state"]) for r in rows}
        expected = {name: ("rejected" if name.startswith("broken") else "notified")
                    for _, name in files}
        took = time.monotonic() - started
        if states != expected:
            print(f"\nthe loop did not finish as expected: {states}", file=sys.stderr)
            print(f"logs: {DEMO / 'flad.log'} and {DEMO / 'sandbox.log'}", file=sys.stderr)
            return 1
        notified = [r for r in rows if r["state"] == "notified"]
        attention = [r for r in notified if r.get("needs_attention")]
        print(f"\ndemo finished in {took:.1f} s: {len(notified) - len(attention)} files "
              f"acknowledged and notified OK, {len(attention)} notified with a blocking "
              "anomaly (needs attention), 1 broken file refused by flad with its reason; "
              f"everything is under {shown(DEMO)}/")
        print(f"to look again: {shown(Path(sys.executable).parent / 'flad')} status -c "
              f"{shown(config)}")
        return 0
    finally:
        stop(service)
        stop(sandbox)


if __name__ == "__main__":
    sys.exit(main())
