"""TOML configuration to typed settings.

The platform's rules that a configuration can break (one SFTP channel per quality,
valid enterprise and sender numbers, private keys nobody else can read) are enforced
here, at load, so that a wrong set-up fails on the operator's screen and not hours
later as a refused connection or a negative receipt. Every problem names the file and
the key; all problems are collected so that `flad check` can list them at once.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flad import identity, keyfiles, listen_address, naming, profiles, secrets
from flad import proxy_address as proxy_mod
from flad.listen_address import ListenAddress
from flad.platform import ENVIRONMENTS
from flad.sftp_settings import ProxySettings, SftpSettings
from flad.xmlcheck import (
    DEFAULT_EMPLOYER_XPATH,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_SENDER_XPATH,
    check_xpath,
)

FS_LINE_FORMATS = ("single", "cr76")
LOG_FORMATS = ("auto", "json", "console")
DEFAULT_PORT = 8022
_APP_CODE = re.compile(r"[A-Z0-9]{4}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SECRET_KEYS = ("passphrase", "password", "secret")


#: How a TOML value's type is named to someone who wrote the file.
_KIND_NAMES: dict[type, str] = {
    int: "a whole number", float: "a number", str: "a text in quotes",
    bool: "true or false", list: "a list [...]", dict: "a table",
}


class ConfigError(Exception):
    """One or more configuration problems, each naming the file and the key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems) if len(problems) < 4 else
                         f"{problems[0]} (and {len(problems) - 1} more problems)")


@dataclass(frozen=True)
class SigningConfig:
    certificate: Path | None
    private_key: Path | None
    pkcs12: Path | None
    passphrase: bytes | None = field(repr=False, default=None)
    passphrase_source: str | None = None  # named when the passphrase is wrong


@dataclass(frozen=True)
class ApplicationConfig:
    name: str
    code: str
    xsd: Path | None
    root_element: str | None
    employer_xpath: str | None
    """None: the profile reads every form's employers (only with a profile)."""
    sender_xpath: str | None
    """None: no sender number is read (a profile's default: the layouts have none)."""
    max_file_bytes: int
    profile: profiles.Profile | None = None


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    quality: str
    company_id: str
    sender_id: str  # zero-padded to 6 digits, as written in file names
    outbox: Path
    inbox: Path
    production: bool
    mandates_file: Path | None
    mandates: frozenset[str] | None
    sign_test_files: bool
    fs_line_format: str
    reply_trust: Path | None
    remove_after_download: bool
    poll_seconds: float
    sftp: SftpSettings
    signing: SigningConfig | None
    applications: tuple[ApplicationConfig, ...]
    noss_number: str | None = None
    """The company's own ONSS registration number (9 digits), when configured."""

    def application(self, name: str) -> ApplicationConfig | None:
        return next((a for a in self.applications if a.name == name), None)

    def environments(self) -> tuple[str, ...]:
        """Where this channel sends: test and simulation (S) always, production if allowed."""
        return ENVIRONMENTS if self.production else ("test", "simulation")

    def needs_signature(self, environment: str) -> bool:
        """Production files are signed; test and simulation (S) ones when sign_test_files."""
        return environment == "production" or self.sign_test_files


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path
    log_format: str
    log_level: str
    rescan_seconds: float
    settle_seconds: float
    duplicate_window_days: int
    max_backoff_seconds: float
    auth_retry_minutes: float
    #: the platform's list of error codes as downloaded from the portal (labels only)
    error_codes: Path | None = None
    #: days before a certificate's end from which flad warns (an error in the last week)
    cert_warn_days: int = 30
    #: where the metrics endpoint (/metrics, /healthz, /readyz) listens; None: off
    metrics_listen: ListenAddress | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    daemon: DaemonConfig
    channels: tuple[ChannelConfig, ...]
    warnings: tuple[str, ...] = ()

    def channel(self, name: str) -> ChannelConfig | None:
        return next((c for c in self.channels if c.name == name), None)


T = TypeVar("T")


class _Reader:
    """Reads typed values out of TOML tables, collecting problems instead of stopping."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.path}: {key}: {message}")

    def get(self, table: Mapping[str, Any], prefix: str, key: str, kind: type[T],
            default: T | None = None, *, required: bool = False) -> T | None:
        full = f"{prefix}{key}"
        if key not in table:
            if required:
                self.problem(full, "is required")
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            self.problem(full, f"must be {_KIND_NAMES.get(kind, kind.__name__)}, got "
                         f"{_KIND_NAMES.get(type(value), type(value).__name__)} {value!r}")
            return default
        return value

    def text(self, table: Mapping[str, Any], prefix: str, key: str, *,
             required: bool = False, default: str | None = None) -> str | None:
        return self.get(table, prefix, key, str, default, required=required)

    def path_value(self, table: Mapping[str, Any], prefix: str, key: str, *,
                   required: bool = False) -> Path | None:
        raw = self.text(table, prefix, key, required=required)
        if raw is None:
            return None
        if not raw.strip():
            self.problem(f"{prefix}{key}", "must not be empty")
            return None
        path = Path(os.path.expandvars(os.path.expanduser(raw)))
        return path if path.is_absolute() else (self.base / path)

    def positive(self, table: Mapping[str, Any], prefix: str, key: str,
                 default: float) -> float:
        value = self.get(table, prefix, key, float, default)
        assert value is not None
        if value <= 0:
            self.problem(f"{prefix}{key}", f"must be greater than 0, got {value}")
            return default
        return value

    def choice(self, table: Mapping[str, Any], prefix: str, key: str,
               choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.text(table, prefix, key, default=default, required=default is None)
        if value is not None and value not in choices:
            self.problem(f"{prefix}{key}", f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def unknown_keys(self, table: Mapping[str, Any], prefix: str, known: set[str]) -> None:
        for key in table:
            if key in known:
                continue
            if any(s in key.lower() for s in _SECRET_KEYS):
                self.problem(f"{prefix}{key}", "secrets are never written in the configuration: "
                             "put it in a file named by passphrase_file, or in a systemd "
                             "credential named by passphrase_credential")
            else:
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem(f"{prefix}{key}", f"unknown key{hint}")

    # -- files ---------------------------------------------------------------------

    def private_file(self, key: str, path: Path, what: str, *, owner: bool = True) -> None:
        """A key or secret file must exist, be readable by its owner only, and that owner
        must be the user running flad (keyfiles names the chown/chmod that fixes it)."""
        problem = keyfiles.private_file_problem(path, what, owner=owner)
        if problem is not None:
            self.problem(key, problem)

    def secret_source(self, table: Mapping[str, Any]) -> str | None:
        """Where the passphrase of `table` comes from, for messages (never the secret)."""
        raw, credential = table.get("passphrase_file"), table.get("passphrase_credential")
        if isinstance(raw, str) and raw.strip():
            path = Path(os.path.expandvars(os.path.expanduser(raw)))
            return f"passphrase_file {path if path.is_absolute() else self.base / path}"
        if isinstance(credential, str):
            return f"systemd credential {credential!r}"
        return None

    def existing_file(self, key: str, path: Path, what: str) -> None:
        if not path.is_file():
            self.problem(key, f"{what} {path} does not exist or is not a file")

    def secret(self, table: Mapping[str, Any], prefix: str, *,
               file_key: str = "passphrase_file",
               credential_key: str = "passphrase_credential",
               what: str = "passphrase file") -> bytes | None:
        """A secret from a file (`passphrase_file`) or from a systemd credential."""
        file_path = self.path_value(table, prefix, file_key)
        credential = self.text(table, prefix, credential_key)
        if file_path is not None and credential is not None:
            self.problem(f"{prefix}{credential_key}",
                         f"give {file_key} or {credential_key}, not both")
            return None
        if credential is not None:
            try:
                file_path = secrets.credential_path(credential)
            except secrets.SecretError as exc:
                self.problem(f"{prefix}{credential_key}", str(exc))
                return None
        if file_path is None:
            return None
        key = f"{prefix}{file_key}" if credential is None else f"{prefix}{credential_key}"
        self.private_file(key, file_path, what, owner=credential is None)
        try:
            return secrets.read_secret_file(file_path, what)
        except secrets.SecretError:
            return None  # private_file has already named the problem


def load(path: str | os.PathLike[str]) -> Config:
    """Load and check a configuration; raises ConfigError with every problem found."""
    config_path = Path(path).absolute()
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{config_path}: the configuration file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{config_path}: cannot be read: {exc}"]) from None
    return loads(text, config_path)


def loads(text: str, path: str | os.PathLike[str]) -> Config:
    """Check configuration `text` as if it were the file `path`: relative paths are
    taken from `path`'s folder and every problem names `path`.

    `flad init` proves a configuration it is about to write this way, before the file
    changes, so nothing has to be rolled back. ConfigError holds every problem found.
    """
    config_path = Path(path).absolute()
    reader = _Reader(config_path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{config_path}: not valid TOML: {exc}"]) from None

    reader.unknown_keys(raw, "", {"daemon", "channel"})
    daemon_table = raw.get("daemon", {})
    if not isinstance(daemon_table, dict):
        reader.problem("daemon", "must be a table ([daemon])")
        daemon_table = {}
    daemon = _daemon(reader, daemon_table)

    channel_tables = raw.get("channel", [])
    if not isinstance(channel_tables, list):
        reader.problem("channel", "must be an array of tables ([[channel]])")
        channel_tables = []
    channels = [
        ch for i, table in enumerate(channel_tables)
        if (ch := _channel(reader, table, f"channel[{i}].")) is not None
    ]
    if not channel_tables:
        reader.problem("channel", "no [[channel]] is configured")
    _check_across_channels(reader, channels, daemon)
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(config_path, daemon, tuple(channels), tuple(reader.warnings))


def _daemon(r: _Reader, t: Mapping[str, Any]) -> DaemonConfig:
    p = "daemon."
    r.unknown_keys(t, p, {"state_dir", "log_format", "log_level", "rescan_seconds",
                          "settle_seconds", "duplicate_window_days", "max_backoff_seconds",
                          "auth_retry_minutes", "error_codes", "cert_warn_days",
                          "metrics_listen", "metrics_listen_public"})
    state_dir = r.path_value(t, p, "state_dir") or Path("/var/lib/flad")
    level = r.choice(t, p, "log_level", ("debug", "info", "warning", "error"), "info")
    window = r.get(t, p, "duplicate_window_days", int, 30)
    assert window is not None
    if window < 0:
        r.problem(f"{p}duplicate_window_days", "must be 0 (no duplicate check) or more")
    return DaemonConfig(
        state_dir=state_dir,
        log_format=r.choice(t, p, "log_format", LOG_FORMATS, "auto") or "auto",
        log_level=level or "info",
        rescan_seconds=r.positive(t, p, "rescan_seconds", 30.0),
        settle_seconds=r.positive(t, p, "settle_seconds", 2.0),
        duplicate_window_days=window,
        max_backoff_seconds=r.positive(t, p, "max_backoff_seconds", 300.0),
        auth_retry_minutes=r.positive(t, p, "auth_retry_minutes", 30.0),
        error_codes=_error_codes(r, t, p),
        cert_warn_days=int(r.positive(t, p, "cert_warn_days", 30)),
        metrics_listen=_metrics_listen(r, t, p),
    )


def _metrics_listen(r: _Reader, t: Mapping[str, Any], p: str) -> ListenAddress | None:
    """Off unless set; an address beyond loopback only with metrics_listen_public."""
    text = r.text(t, p, "metrics_listen")
    public = r.get(t, p, "metrics_listen_public", bool, False)
    if text is None:
        return None
    try:
        address = listen_address.parse(text)
    except listen_address.AddressProblem as exc:
        r.problem(f"{p}metrics_listen", str(exc))
        return None
    if not address.loopback and not public:
        r.problem(f"{p}metrics_listen", f"{address.shown()} is not a loopback address: "
                  "the metrics would be open to the network; listen on 127.0.0.1 (and let "
                  "the scraper reach it through a tunnel or a proxy), or add "
                  "metrics_listen_public = true to open it on purpose")
        return None
    return address


def _error_codes(r: _Reader, t: Mapping[str, Any], p: str) -> Path | None:
    path = r.path_value(t, p, "error_codes")
    if path is not None:
        r.existing_file(f"{p}error_codes", path, "list of error codes")
    return path


def _channel(r: _Reader, t: Any, p: str) -> ChannelConfig | None:
    if not isinstance(t, dict):
        r.problem(p.rstrip("."), "must be a table")
        return None
    before = len(r.problems)
    name = r.text(t, p, "name", required=True) or ""
    if name and not _NAME.fullmatch(name):
        r.problem(f"{p}name", f"{name!r} must be letters, digits, '-', '_' or '.', at most "
                  "64 characters")
    if name:
        p = f"channel {name!r}: "  # later messages read better with the channel's name
    r.unknown_keys(t, p, {"name", "quality", "company_id", "noss_number", "sender_id",
                          "outbox", "inbox",
                          "production", "mandates", "sign_test_files", "fs_line_format",
                          "reply_trust", "remove_after_download", "poll_seconds", "sftp",
                          "signing", "application"})
    quality = r.choice(t, p, "quality", identity.QUALITIES, None) or ""
    company_raw = r.text(t, p, "company_id", required=True)
    company_id = ""
    if company_raw is not None:
        company_id = identity.normalize_enterprise_number(company_raw)
        reason = identity.enterprise_number_problem(company_id)
        if reason:
            r.problem(f"{p}company_id",
                      f"{company_raw!r} is not a valid enterprise number: {reason}")
    noss_number = _noss_number(r, t, p)
    sender_raw = t.get("sender_id")
    if isinstance(sender_raw, int) and not isinstance(sender_raw, bool):
        sender_raw = str(sender_raw)
    sender_id = ""
    if sender_raw is None:
        r.problem(f"{p}sender_id", "is required")
    elif not isinstance(sender_raw, str) or not re.fullmatch(r"[0-9]{1,6}", sender_raw):
        r.problem(f"{p}sender_id", f"must be 1 to 6 digits, got {sender_raw!r}")
    else:
        sender_id = naming.pad_sender(sender_raw)
    outbox = r.path_value(t, p, "outbox", required=True) or Path()
    inbox = r.path_value(t, p, "inbox", required=True) or Path()
    production = bool(r.get(t, p, "production", bool, False))
    sign_test_files = bool(r.get(t, p, "sign_test_files", bool, False))

    mandates_file = r.path_value(t, p, "mandates")
    mandates: frozenset[str] | None = None
    if mandates_file is not None:
        if quality not in identity.MANDATARY_QUALITIES:
            r.problem(f"{p}mandates", f"only mandataries (social_secretariat, service_provider) "
                      f"have mandates; this channel's quality is {quality!r}")
        try:
            mandates = identity.parse_mandate_numbers(
                mandates_file.read_text(encoding="utf-8"), str(mandates_file), r.warnings)
        except OSError as exc:
            r.problem(f"{p}mandates", f"cannot read {mandates_file}: {exc.strerror}")
        except (ValueError, UnicodeDecodeError) as exc:
            r.problem(f"{p}mandates", str(exc))
    elif quality in identity.MANDATARY_QUALITIES:
        r.warnings.append(
            f"{r.path}: {p}mandates: no mandate list for this {quality} channel: files are "
            "accepted for any employer, with a warning per file")

    reply_trust = r.path_value(t, p, "reply_trust")
    if reply_trust is not None:
        r.existing_file(f"{p}reply_trust", reply_trust, "trusted certificates file")

    sftp = _sftp(r, t.get("sftp"), f"{p}sftp.")
    signing_table = t.get("signing")
    signing: SigningConfig | None = None
    if signing_table is not None:
        signing = _signing(r, signing_table, f"{p}signing.")
    elif production or sign_test_files:
        why = "production = true" if production else "sign_test_files = true"
        r.problem(f"{p}signing", f"is required when {why}: production files need their FS "
                  "signature")

    apps_raw = t.get("application", [])
    apps: list[ApplicationConfig] = []
    if not isinstance(apps_raw, list) or not apps_raw:
        r.problem(f"{p}application", "at least one [[channel.application]] is required")
    else:
        for i, app_table in enumerate(apps_raw):
            app = _application(r, app_table, f"{p}application[{i}].")
            if app is not None:
                apps.append(app)
        _unique(r, [a.name for a in apps], f"{p}application.name", "application name")
        _unique(r, [a.code for a in apps], f"{p}application.code", "application code")

    if len(r.problems) > before or sftp is None:
        return None
    return ChannelConfig(
        name=name, quality=quality, company_id=company_id, sender_id=sender_id,
        outbox=outbox, inbox=inbox, production=production, mandates_file=mandates_file,
        mandates=mandates, sign_test_files=sign_test_files,
        fs_line_format=r.choice(t, p, "fs_line_format", FS_LINE_FORMATS, "single") or "single",
        reply_trust=reply_trust,
        remove_after_download=bool(r.get(t, p, "remove_after_download", bool, True)),
        poll_seconds=r.positive(t, p, "poll_seconds", 60.0),
        sftp=sftp, signing=signing, applications=tuple(apps), noss_number=noss_number,
    )


def _noss_number(r: _Reader, t: Mapping[str, Any], p: str) -> str | None:
    """The channel's own ONSS number: 9 digits; a failed check digit is only a warning."""
    raw = t.get("noss_number")
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if raw is None:
        return None
    if not isinstance(raw, str):
        r.problem(f"{p}noss_number", f"must be 9 digits (a string), got {raw!r}")
        return None
    number = identity.normalize_noss_number(raw)
    if identity.noss_number_problem(number) is not None or number == "000000000":
        r.problem(f"{p}noss_number", f"{raw!r} is not an ONSS registration number: it must "
                  "be 9 digits NNNNNNNCC")
        return None
    check = identity.noss_check_problem(number)
    if check is not None:
        r.warnings.append(f"{r.path}: {p}noss_number: {check}")
    return number


def _sftp(r: _Reader, t: Any, p: str) -> SftpSettings | None:
    if not isinstance(t, dict):
        r.problem(p.rstrip("."), "is required ([channel.sftp] with host, username, "
                  "private_key, known_hosts)")
        return None
    r.unknown_keys(t, p, {"host", "port", "username", "private_key", "passphrase_file",
                          "passphrase_credential", "known_hosts", "legacy_ssh_rsa",
                          "connect_timeout", "request_timeout", "keepalive_seconds",
                          "proxy", "proxy_credentials_file", "proxy_credential"})
    proxy = r.text(t, p, "proxy")
    if proxy is not None and (problem := proxy_mod.url_problem(proxy)) is not None:
        r.problem(f"{p}proxy", problem)
        proxy = None
    proxy_credentials = r.secret(t, p, file_key="proxy_credentials_file",
                                 credential_key="proxy_credential",
                                 what="proxy credentials file")
    if proxy_credentials is not None:
        if proxy is None and "proxy" not in t:
            r.problem(f"{p}proxy_credentials_file", "credentials without a proxy: set proxy")
        elif (problem := proxy_mod.credentials_problem(proxy_credentials)) is not None:
            r.problem(f"{p}proxy_credentials_file", problem)
    port = r.get(t, p, "port", int, DEFAULT_PORT)
    assert port is not None
    if not 1 <= port <= 65535:
        r.problem(f"{p}port", f"must be between 1 and 65535, got {port}")
    key = r.path_value(t, p, "private_key", required=True)
    if key is not None:
        r.private_file(f"{p}private_key", key, "SSH private key")
    known_hosts = r.path_value(t, p, "known_hosts", required=True)
    keepalive = r.get(t, p, "keepalive_seconds", int, 15)
    assert keepalive is not None
    return SftpSettings(
        host=r.text(t, p, "host", required=True) or "",
        port=port,
        username=r.text(t, p, "username", required=True) or "",
        private_key=key or Path(),
        passphrase=r.secret(t, p),
        known_hosts=known_hosts or Path(),
        legacy_ssh_rsa=bool(r.get(t, p, "legacy_ssh_rsa", bool, False)),
        connect_timeout=r.positive(t, p, "connect_timeout", 15.0),
        request_timeout=r.positive(t, p, "request_timeout", 60.0),
        keepalive_seconds=max(1, keepalive),
        proxy=ProxySettings(proxy, proxy_credentials) if proxy else None,
        passphrase_source=r.secret_source(t),
    )


def _signing(r: _Reader, t: Any, p: str) -> SigningConfig | None:
    if not isinstance(t, dict):
        r.problem(p.rstrip("."), "must be a table")
        return None
    r.unknown_keys(t, p, {"certificate", "private_key", "pkcs12", "passphrase_file",
                          "passphrase_credential"})
    cert = r.path_value(t, p, "certificate")
    key = r.path_value(t, p, "private_key")
    p12 = r.path_value(t, p, "pkcs12")
    if p12 is not None and (cert is not None or key is not None):
        r.problem(f"{p}pkcs12", "give either pkcs12, or certificate and private_key, not both")
    elif p12 is None and (cert is None or key is None):
        r.problem(f"{p}certificate", "certificate and private_key (PEM) are both required, "
                  "or pkcs12")
    if p12 is not None:
        r.private_file(f"{p}pkcs12", p12, "PKCS#12 file")
    if key is not None:
        r.private_file(f"{p}private_key", key, "signing private key")
    if cert is not None:
        r.existing_file(f"{p}certificate", cert, "certificate")
    return SigningConfig(certificate=cert, private_key=key, pkcs12=p12, passphrase=r.secret(t, p),
                         passphrase_source=r.secret_source(t))


def _application(r: _Reader, t: Any, p: str) -> ApplicationConfig | None:
    if not isinstance(t, dict):
        r.problem(p.rstrip("."), "must be a table")
        return None
    r.unknown_keys(t, p, {"name", "code", "xsd", "root_element", "employer_xpath",
                          "sender_xpath", "max_file_bytes", "profile"})
    name = r.text(t, p, "name", required=True) or ""
    if name and not _NAME.fullmatch(name):
        r.problem(f"{p}name", f"{name!r} must be letters, digits, '-', '_' or '.' (it is a "
                  "folder name under the outbox)")
    profile: profiles.Profile | None = None
    profile_name = r.text(t, p, "profile")
    if profile_name is not None:
        profile = profiles.profile_named(profile_name)
        if profile is None:
            r.problem(f"{p}profile", f"unknown profile {profile_name!r}, expected one of "
                      f"{', '.join(profiles.PROFILES)}")
    fixed_code = profile.code if profile is not None else None
    code = r.text(t, p, "code", required=fixed_code is None) or fixed_code or ""
    if code and not _APP_CODE.fullmatch(code):
        r.problem(f"{p}code", f"must be 4 characters A-Z or 0-9 (the code from the "
                  f"application's batch manual), got {code!r}")
    xsd = r.path_value(t, p, "xsd")
    if xsd is not None:
        r.existing_file(f"{p}xsd", xsd, "XSD")
    else:
        r.warnings.append(f"{r.path}: {p}xsd: no XSD configured: files of {name!r} are only "
                          "checked for well-formedness and identities")
    xpaths: dict[str, str | None] = {}
    for key, default in (("employer_xpath", DEFAULT_EMPLOYER_XPATH),
                         ("sender_xpath", DEFAULT_SENDER_XPATH)):
        # with a profile, no XPath unless configured: the profile reads the forms
        expr = r.text(t, p, key, default=None if profile is not None else default)
        if expr is not None:
            reason = check_xpath(expr)
            if reason:
                r.problem(f"{p}{key}", f"invalid XPath {expr!r}: {reason}")
        xpaths[key] = expr
    max_bytes = r.get(t, p, "max_file_bytes", int, DEFAULT_MAX_FILE_BYTES)
    assert max_bytes is not None
    if max_bytes <= 0:
        r.problem(f"{p}max_file_bytes", "must be greater than 0")
    return ApplicationConfig(
        name=name, code=code, xsd=xsd,
        root_element=r.text(t, p, "root_element",
                            default=profile.root_element if profile is not None else None),
        employer_xpath=xpaths["employer_xpath"], sender_xpath=xpaths["sender_xpath"],
        max_file_bytes=max_bytes, profile=profile,
    )


def _unique(r: _Reader, values: list[str], key: str, what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            r.problem(key, f"{what} {v!r} is used twice")
        seen.add(v)


def _overlaps(a: Path, b: Path) -> bool:
    a, b = _normal(a), _normal(b)
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _normal(p: Path) -> Path:
    return Path(os.path.normpath(p.absolute()))


def _check_across_channels(r: _Reader, channels: list[ChannelConfig],
                           daemon: DaemonConfig) -> None:
    _unique(r, [c.name for c in channels], "channel.name", "channel name")
    seen_quality: dict[tuple[str, str], str] = {}
    seen_login: dict[tuple[str, int, str], str] = {}
    for c in channels:
        key = f"channel {c.name!r}: "
        other = seen_quality.setdefault((c.company_id, c.quality), c.name)
        if other != c.name:
            article = "an" if c.quality[:1] in "aeiou" else "a"  # "an employer channel"
            r.problem(f"{key}quality", f"company {c.company_id} already has {article} "
                      f"{c.quality} channel ({other!r}); the platform allows one SFTP channel per "
                      "quality: send every application through that channel")
        login = (c.sftp.host.lower(), c.sftp.port, c.sftp.username)
        other = seen_login.setdefault(login, c.name)
        if other != c.name:
            r.problem(f"{key}sftp.username", f"{c.sftp.username}@{c.sftp.host}:{c.sftp.port} "
                      f"is already channel {other!r}: two channels with the same SFTP login are "
                      "the same channel")
    folders: list[tuple[str, str, Path]] = []
    for c in channels:
        folders += [(c.name, "outbox", c.outbox), (c.name, "inbox", c.inbox)]
    for i, (name_a, key_a, path_a) in enumerate(folders):
        if _overlaps(path_a, daemon.state_dir):
            r.problem(f"channel {name_a!r}: {key_a}", f"{path_a} overlaps daemon.state_dir "
                      f"{daemon.state_dir}")
        for name_b, key_b, path_b in folders[i + 1:]:
            if _overlaps(path_a, path_b):
                where = (f"channel {name_b!r}'s {key_b}" if name_a != name_b
                         else f"this channel's {key_b}")
                r.problem(f"channel {name_a!r}: {key_a}",
                          f"{path_a} overlaps {where} {path_b}: each channel needs folders "
                          "of its own")

