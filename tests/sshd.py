"""A real OpenSSH server for the tests: `/usr/sbin/sshd` on 127.0.0.1, nothing mocked.

Each `SshServer` lives in its own temporary folder (made with `mkdtemp`, so its path has
no characters the sshd config or a shell would interpret) holding the config, a host key,
an authorized-keys file, a client key, the log and the SFTP root with the platform's
folders `IN`, `OUT`, `INTEST`, `OUTTEST`.

The log (`log_text()`) holds both sshd's own lines (logins, disconnects) and the SFTP
server's lines (open/close/rename/remove with file names), in order, so a test can read
what reached the server and in which order (`sftp_operations()`).

Why `sftp-server` and not `internal-sftp`: OpenSSH's in-process SFTP server always logs to
syslog (sshd drops its `-E` log file for the session child), and a container has no
`/dev/log`. The stand-alone `sftp-server -e` logs to stderr, which a two-line wrapper
script appends to the same log file. `-d <root>` makes relative remote paths resolve
inside the SFTP root, as `internal-sftp -d` would.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import getpass
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

SSHD = Path("/usr/sbin/sshd")
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")
PRIVSEP_DIR = Path("/run/sshd")
REMOTE_FOLDERS = ("IN", "OUT", "INTEST", "OUTTEST")

KeyKind = Literal["ed25519", "rsa", "ecdsa"]
KeyFormat = Literal["openssh", "pem"]

_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]+")
_ACCEPTED = re.compile(r"^Accepted publickey for \S+ from ", re.MULTILINE)
# sftp-server log lines: `open "p" flags ...`, `close "p" bytes ...`, `remove name "p"`,
# `rename old "a" new "b"`, `posix-rename old "a" new "b"`, `mkdir name "p" mode ...`,
# `opendir "p"`, and at VERBOSE `stat name "p"`, `lstat name "p"`.
_SFTP_OP = re.compile(
    r'^(?P<op>[a-z][a-z-]*)(?: (?:name|old))? "(?P<path>[^"]*)"(?: new "(?P<new>[^"]*)")?'
)


class SshdMissing(RuntimeError):
    """The OpenSSH server is not installed: the tests of the shell cannot run."""


def generate_key(
    path: Path,
    kind: KeyKind = "ed25519",
    *,
    passphrase: bytes | None = None,
    fmt: KeyFormat = "openssh",
    comment: str = "flad-test",
) -> str:
    """Write a new private key to `path` (mode 0600); return its public line `type b64 comment`.

    `fmt="pem"` writes the traditional PEM forms (PKCS#1 for RSA, SEC1 for ECDSA, PKCS#8
    for Ed25519, which has no traditional form).
    """
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    if fmt == "openssh":
        private_format = serialization.PrivateFormat.OpenSSH
    elif kind == "ed25519":
        private_format = serialization.PrivateFormat.PKCS8
    else:
        private_format = serialization.PrivateFormat.TraditionalOpenSSL
    data = key.private_bytes(serialization.Encoding.PEM, private_format, encryption)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{public.decode('ascii')} {comment}"


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies, however it dies,
    so a crashed test run leaves no sshd behind."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children_by_parent() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree = _children_by_parent()
    found: list[int] = []
    todo = list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class SshServer:
    """A real `sshd -D` on 127.0.0.1 with its own host key, authorized keys and SFTP root."""

    def __init__(
        self,
        *,
        host_key_type: Literal["ed25519", "rsa"] = "ed25519",
        workdir: Path | None = None,
        log_level: str = "INFO",
        sftp_log_level: str = "INFO",
        pubkey_accepted_algorithms: str = "+ssh-rsa",
        sftp_server_options: Sequence[str] = (),
        ciphers: str | None = None,
    ) -> None:
        """`pubkey_accepted_algorithms="ssh-rsa,ssh-ed25519"` mimics the platform, which
        takes RSA user keys only with SHA-1 signatures. `sftp_server_options` go to
        sftp-server: `("-R",)` refuses every write (permission denied), `("-P", "remove")`
        refuses one request type. `ciphers` is sshd's `Ciphers` line (its default if None).
        """
        if not SSHD.exists() or not SFTP_SERVER.exists():
            raise SshdMissing(
                f"{SSHD} or {SFTP_SERVER} is missing: install openssh-server "
                "(apt-get install openssh-server); the transport tests need a real sshd"
            )
        self.host_key_type = host_key_type
        self.username = getpass.getuser()
        self.host = "127.0.0.1"
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="flad-sshd-"))
        if not _SAFE_PATH.fullmatch(str(self.dir)):
            # sshd_config has no quoting for some keywords and expands % tokens.
            raise ValueError(f"sshd work folder needs a plain path: {self.dir}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = self.dir / "root"
        for folder in REMOTE_FOLDERS:
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.host_key_path = self.dir / f"ssh_host_{host_key_type}_key"
        self.client_key_path = self.dir / "client_ed25519"
        self.authorized_keys_path = self.dir / "authorized_keys"
        self.config_path = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.pid_path = self.dir / "sshd.pid"
        self._sftp_wrapper = self.dir / "sftp-server.sh"
        self._log_level = log_level
        self._sftp_log_level = sftp_log_level
        self._pubkey_algorithms = pubkey_accepted_algorithms
        self._ciphers = ciphers
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

        self.host_public_key_line = self._new_host_key()
        self.authorized_keys_path.write_text("")
        self.authorize(generate_key(self.client_key_path, "ed25519"))
        command = [str(SFTP_SERVER), "-e", "-l", sftp_log_level, "-d", str(self.root)]
        args = shlex.join([*command, *sftp_server_options])
        logfile = shlex.quote(str(self.log_path))
        self._sftp_wrapper.write_text(f"#!/bin/sh\nexec {args} 2>>{logfile}\n")
        self._sftp_wrapper.chmod(0o755)

    # -- keys --------------------------------------------------------------------------

    def _new_host_key(self) -> str:
        line = generate_key(self.host_key_path, self.host_key_type, comment="")
        return line.strip()  # "type base64"

    def authorize(self, pubkey_line: str) -> None:
        """Add a public key line (`type base64 [comment]`) to the authorized keys."""
        with self.authorized_keys_path.open("a") as f:
            f.write(pubkey_line.strip() + "\n")

    def known_hosts_line(self, port: int | None = None) -> str:
        return f"[{self.host}]:{port or self.port} {self.host_public_key_line}"

    def write_known_hosts(self, path: Path, port: int | None = None) -> Path:
        """Write a known_hosts file trusting this server (replaces the file); `port` when
        it is reached through a proxy on another port."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.known_hosts_line(port) + "\n")
        return path

    def replace_host_key(self) -> None:
        """Give the server a new host key of the same type, and restart it."""
        self.host_public_key_line = self._new_host_key()
        self.restart()

    # -- life --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sshd has not been started yet")
        return self._port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        self.config_path.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}:{self.port}",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.pid_path}",
                    f"AuthorizedKeysFile {self.authorized_keys_path}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    f"PubkeyAcceptedAlgorithms {self._pubkey_algorithms}",
                    f"LogLevel {self._log_level}",
                    "MaxStartups 100",
                    "LoginGraceTime 30",
                    "UseDNS no",
                    # The SFTP wrapper runs through the user's shell; a Debian bash started
                    # by sshd sources ~/.bashrc (slow, and not ours) unless SHLVL says it
                    # is nested.
                    "SetEnv SHLVL=1",
                    "PermitUserRC no",
                    "PrintMotd no",
                    "X11Forwarding no",
                    "AllowTcpForwarding no",
                    f"Subsystem sftp {self._sftp_wrapper}",
                    *([f"Ciphers {self._ciphers}"] if self._ciphers else []),
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        fixed_port = self._port is not None
        for _attempt in range(1 if fixed_port else 5):
            if not fixed_port:
                self._port = _free_port()
            self._write_config()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._proc = subprocess.Popen(
                [str(SSHD), "-D", "-E", str(self.log_path), "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent,  # one libc call: safe enough in the child
            )
            if self._wait_ready(timeout):
                return
            stderr = self._reap()
            log = self.log_text()[offset:]
            if "Address already in use" in log + stderr and not fixed_port:
                continue
            raise RuntimeError(f"sshd did not start on port {self._port}:\n{stderr}{log}")
        raise RuntimeError("sshd did not find a free port in 5 attempts")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                pass
            time.sleep(0.01)
        return False

    def _reap(self) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=5)
        return err.decode(errors="replace")

    def session_pids(self) -> list[int]:
        """Processes serving the open SSH sessions (children of the listener)."""
        return _descendants(self._proc.pid) if self._proc is not None else []

    def kill_sessions(self) -> int:
        """SIGKILL every open session (the listener keeps running); return how many."""
        pids = self.session_pids()
        _kill_all(pids)
        return len(pids)

    def signal_sessions(self, sig: signal.Signals) -> int:
        """Send `sig` to every open session: SIGSTOP makes a server that stops answering
        without closing the connection, SIGCONT wakes it. Returns how many processes."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return len(pids)

    def stop(self) -> None:
        """SIGTERM the listener and wait; open sessions are killed too (a dead server)."""
        proc = self._proc
        if proc is None:
            return
        sessions = self.session_pids()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        _kill_all(sessions)
        self._reap()

    def restart(self) -> None:
        """Stop and start again on the same port with the current host key."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SshServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading the log ---------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connection_count(self) -> int:
        """How many public-key logins the server accepted (over all its starts)."""
        return len(_ACCEPTED.findall(self.log_text()))

    def sftp_operations(self) -> list[tuple[str, str]]:
        """The SFTP requests the server logged, in order, as `(op, path)`.

        `op` is the sftp-server's word: `open`, `close`, `remove`, `rename`,
        `posix-rename`, `mkdir`, `rmdir`, `opendir`, `closedir`, `realpath`, `set`, and at
        `sftp_log_level="VERBOSE"` also `stat`, `lstat`. Paths are relative to `root`
        (as a client naming `INTEST/x` sees them); for a rename the path is `old -> new`.
        """
        ops: list[tuple[str, str]] = []
        for line in self.log_text().splitlines():
            m = _SFTP_OP.match(line)
            if m is None:
                continue
            path = self._relative(m["path"])
            if m["new"] is not None:
                path = f"{path} -> {self._relative(m['new'])}"
            ops.append((m["op"], path))
        return ops

    def _relative(self, path: str) -> str:
        prefix = f"{self.root}/"
        return path[len(prefix) :] if path.startswith(prefix) else path
