"""A flad installation against the sandbox platform, which answers with replies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from flad.sandbox import Sandbox, start_sandbox
from tests import configs
from tests.certs import write_test_signer
from tests.harness import STANDIN_XSD, Install


@contextmanager
def sandboxed_install(tmp: Path, **sandbox_options: Any) -> Iterator[tuple[Install, Sandbox]]:
    """flad configured for a fresh sandbox (fast timings), and the sandbox itself."""
    key = configs.ssh_key(tmp / "client_key")
    public = serialization.load_ssh_private_key(key.read_bytes(), None).public_key()
    (tmp / "authorized.pub").write_bytes(public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    signer = write_test_signer(tmp / "signer")
    options: dict[str, Any] = {"notify_delay": 0.2, "poll_interval": 0.05,
                               "settle_seconds": 0.1, **sandbox_options}
    sandbox = start_sandbox(tmp / "platform", authorized_keys=tmp / "authorized.pub",
                            client_cert=signer.cert_path, **options)
    try:
        (tmp / "known_hosts").write_bytes(sandbox.known_hosts_path.read_bytes())
        channel = configs.channel(
            tmp, "acme", port=sandbox.port, username="flad", key=key,
            signing={"certificate": signer.cert_path, "private_key": signer.key_path},
            application=[{"name": "fla", "code": "FLAX", "xsd": STANDIN_XSD,
                          "root_element": "FLADeclaration"}])
        channel["poll_seconds"] = 0.5
        daemon = {"settle_seconds": 0.5, "rescan_seconds": 1, "max_backoff_seconds": 1,
                  "log_format": "json"}
        path = configs.write(tmp, [channel], **daemon)
        install = Install(tmp, None, path, signer, channel)  # type: ignore[arg-type]
        install.daemon = {"state_dir": tmp / "state", **daemon}
        yield install, sandbox
    finally:
        sandbox.stop()
