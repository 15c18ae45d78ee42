"""A flad installation for integration tests: config, keys, certificate, outbox, sshd."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flad import config as config_mod
from flad.daemon import Service
from flad.journal import Journal, Submission
from tests import configs
from tests.certs import SignerFiles, write_test_signer
from tests.sshd import SshServer

SAMPLE = (Path(__file__).parent.parent / "flad" / "data" / "sample-fla.xml").read_bytes()
STANDIN_XSD = Path(__file__).parent.parent / "flad" / "data" / "standin-fla.xsd"


def sample(n: int = 0, size: int = 0) -> bytes:
    """A valid stand-in FLA file; `n` makes the content unique, `size` pads it."""
    body = SAMPLE.rstrip() + f"\n<!-- {n} -->\n".encode()
    line = b"<!--" + b"x" * 90 + b"-->\n"  # many small comments: no text node is huge
    missing = max(0, size - len(body))
    return body + line * (missing // len(line)) + b" " * (missing % len(line))


@dataclass
class Install:
    tmp: Path
    sshd: SshServer
    config_path: Path
    signer: SignerFiles
    channel: dict[str, Any]

    @property
    def config(self) -> config_mod.Config:
        return config_mod.load(self.config_path)

    @property
    def outbox(self) -> Path:
        return Path(self.channel["outbox"])

    @property
    def inbox(self) -> Path:
        return Path(self.channel["inbox"])

    def drop(self, name: str, data: bytes, env: str = "test", app: str = "fla") -> Path:
        """Drop the polite way: write a temporary name, then rename."""
        folder = self.outbox / env / app
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        os.rename(tmp, folder / name)
        return folder / name

    def run_once(self, max_wait: float = 20.0) -> int:
        return Service(self.config, once=True, max_wait=max_wait).run()

    def journal(self) -> Journal:
        return Journal(self.tmp / "state" / "journal.sqlite3")

    def submissions(self) -> list[Submission]:
        db = self.journal()
        try:
            return db.submissions()
        finally:
            db.close()

    def remote(self, folder: str = "INTEST") -> list[str]:
        return sorted(os.listdir(self.sshd.root / folder))

    def rewrite(self, **changes: Any) -> None:
        self.channel.update(changes)
        configs.write(self.tmp, [self.channel], **(self.daemon or {}))

    daemon: dict[str, Any] | None = None


def make_install(tmp: Path, sshd: SshServer, *, production: bool = False,
                 sign_test_files: bool = False, poll_seconds: float = 0.5,
                 **daemon: Any) -> Install:
    key = tmp / "client_key"
    shutil.copy(sshd.client_key_path, key)
    os.chmod(key, 0o600)
    sshd.write_known_hosts(tmp / "known_hosts")
    signer = write_test_signer(tmp / "signer")
    channel = configs.channel(
        tmp, "acme", port=sshd.port, username=sshd.username, key=key,
        production=production, sign_test_files=sign_test_files,
        signing={"certificate": signer.cert_path, "private_key": signer.key_path},
        application=[{"name": "fla", "code": "FLAX", "xsd": STANDIN_XSD,
                      "root_element": "FLADeclaration"}])
    channel["sftp"]["connect_timeout"] = 3
    channel["sftp"]["request_timeout"] = 10
    channel["poll_seconds"] = poll_seconds
    daemon.setdefault("settle_seconds", 0.5)
    daemon.setdefault("rescan_seconds", 1)
    daemon.setdefault("max_backoff_seconds", 1)
    daemon.setdefault("log_format", "json")
    path = configs.write(tmp, [channel], **daemon)
    install = Install(tmp, sshd, path, signer, channel)
    install.daemon = {"state_dir": tmp / "state", **daemon}
    return install


class Running:
    """The service in a background thread, as `flad run` runs it (minus signals)."""

    def __init__(self, install: Install) -> None:
        self.service = Service(install.config, install_signals=False)
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.service.run()),
                                       daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the service did not stop within 15 s"


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
