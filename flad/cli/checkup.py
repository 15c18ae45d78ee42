"""`flad check` and `flad validate`: the whole set-up looked at once, before any file.

An operator fixing a new installation wants every problem in one list, not one per
attempt; so each check records a finding and goes on.
"""

from __future__ import annotations

import datetime
import os
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

from flad import config as config_mod
from flad import identity, sharedhost, signing, strays, xmlcheck
from flad.config import ChannelConfig, Config
from flad.errorlabels import load_error_labels
from flad.filecheck import FileChecker, Rejected
from flad.platform import OPTIONAL_FOLDERS, REMOTE_IN, REMOTE_OUT


class UsageError(Exception):
    """The command line does not say enough (which channel, which application)."""


@dataclass(frozen=True)
class Finding:
    level: str  # "ok" | "warning" | "error"
    subject: str
    message: str

    def line(self) -> str:
        return f"{self.level.upper():7} {self.subject}: {self.message}"


@dataclass(frozen=True)
class FileVerdict:
    ok: bool
    reason: str | None
    warnings: tuple[str, ...]


def _pick_channel(config: Config, name: str | None) -> ChannelConfig:
    if name is not None:
        channel = config.channel(name)
        if channel is None:
            raise UsageError(f"no channel {name!r}; channels: "
                             f"{', '.join(c.name for c in config.channels)}")
        return channel
    if len(config.channels) == 1:
        return config.channels[0]
    raise UsageError("several channels are configured: say which with --channel")


def validate_file(config: Config, path: Path, *, channel: str | None,
                  app: str | None) -> FileVerdict:
    """Check one file as the service would, without sending or moving it."""
    ch = _pick_channel(config, channel)
    app_name = app
    if app_name is None:
        if len(ch.applications) == 1:
            app_name = ch.applications[0].name
        elif ch.application(path.parent.name) is not None:
            app_name = path.parent.name
        else:
            raise UsageError(f"channel {ch.name} has several applications: say which with "
                             "--app")
    application = ch.application(app_name)
    if application is None:
        known = ", ".join(a.name for a in ch.applications) or "none"
        raise UsageError(f"channel {ch.name} has no application {app_name!r}; its "
                         f"applications: {known}")
    try:
        if path.is_symlink() or not path.is_file():
            return FileVerdict(False, "not a regular file", ())
        if path.stat().st_size > application.max_file_bytes:
            return FileVerdict(False, f"file is {path.stat().st_size} bytes, larger than the "
                               f"limit of {application.max_file_bytes} bytes", ())
        data = path.read_bytes()
    except OSError as exc:
        return FileVerdict(False, f"cannot read the file: {exc.strerror}", ())
    try:
        warnings = FileChecker(ch).check(application, "test", data)
    except Rejected as exc:
        return FileVerdict(False, str(exc), ())
    except xmlcheck.XmlRejected as exc:  # a broken XSD
        return FileVerdict(False, str(exc), ())
    return FileVerdict(True, None, warnings)


def check_all(config_path: str | os.PathLike[str], *, offline: bool) -> list[Finding]:
    try:
        config = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        findings = [Finding("error", "configuration", p) for p in exc.problems]
        return findings + _certificates_of_broken_config(Path(config_path))
    findings = [Finding("warning", "configuration", w) for w in config.warnings]
    findings.append(Finding("ok", "configuration", f"{config.path}: "
                            f"{len(config.channels)} channel(s)"))
    findings += _check_state_dir(config)
    findings += [Finding("warning", subject, line)
                 for subject, line in sharedhost.exposure(config)]
    findings.append(_check_paramiko())
    findings += _check_error_codes(config)
    from flad.cli import checkmore

    findings += checkmore.check_metrics(config)
    for channel in config.channels:
        findings += _check_channel_offline(channel, config.path)
        findings += checkmore.check_lifetimes(config, channel)
        if not offline:
            proxy, through = checkmore.check_proxy_leg(channel)
            findings += proxy
            if through:  # a proxy that fails would only fail the SSH leg again
                findings += _check_channel_online(channel, config.path)
    return findings


def _certificates_of_broken_config(path: Path) -> list[Finding]:
    """Certificate dates even when the configuration does not load: every problem at once."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    out: list[Finding] = []
    channels = raw.get("channel", [])
    for table in channels if isinstance(channels, list) else []:
        signing_table = table.get("signing") if isinstance(table, dict) else None
        cert = signing_table.get("certificate") if isinstance(signing_table, dict) else None
        if not isinstance(cert, str):
            continue
        cert_path = Path(cert) if Path(cert).is_absolute() else path.parent / cert
        subject = f"channel {table.get('name', '?')} signing"
        try:
            certificate = signing.load_certificates(cert_path)[0]
        except (signing.SigningError, OSError, IndexError):
            continue  # the configuration errors above already say what is wrong
        now = datetime.datetime.now(datetime.UTC)
        if certificate.not_valid_after_utc < now:
            out.append(Finding("error", subject, f"certificate {cert_path} expired on "
                               f"{certificate.not_valid_after_utc:%Y-%m-%d}"))
        elif certificate.not_valid_before_utc > now:
            out.append(Finding("error", subject, f"certificate {cert_path} is not valid "
                               f"before {certificate.not_valid_before_utc:%Y-%m-%d}"))
    return out


def _check_paramiko() -> Finding:
    from flad.remote import RemoteIncompatible, paramiko_compat

    try:
        paramiko_compat.self_check()
    except RemoteIncompatible as exc:
        return Finding("error", "paramiko", str(exc))
    return Finding("ok", "paramiko", f"{paramiko_compat.paramiko_version()} (flad is tested "
                   f"with {paramiko_compat.SUPPORTED})")


def _check_state_dir(config: Config) -> list[Finding]:
    state = config.daemon.state_dir
    probe = state if state.exists() else state.parent
    if not os.access(probe, os.W_OK):
        return [Finding("error", "daemon.state_dir", f"{state} is not writable by this user")]
    return [Finding("ok", "daemon.state_dir", str(state))]


def _check_error_codes(config: Config) -> list[Finding]:
    """The platform's list of error codes, when named, must be that list (labels only)."""
    path = config.daemon.error_codes
    if path is None:
        return []
    labels, problem = load_error_labels(path)
    if problem is not None:
        return [Finding("warning", "daemon.error_codes",
                        f"{problem}: error codes will be shown without their label")]
    return [Finding("ok", "daemon.error_codes", f"{path}: {len(labels)} error codes")]


def _check_folder(subject: str, folder: Path) -> Finding:
    """A folder flad creates at start: say where, and whether it exists yet."""
    if folder.is_dir():
        if os.access(folder, os.W_OK | os.X_OK):
            return Finding("ok", subject, str(folder))
        return Finding("error", subject, f"{folder} is not writable by this user")
    if folder.exists() or folder.is_symlink():
        return Finding("error", subject, f"{folder} exists and is not a folder")
    existing = next((p for p in folder.parents if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        return Finding("error", subject, f"{folder} does not exist and cannot be created "
                       f"here ({existing} is not writable by this user)")
    return Finding("warning", subject, f"{folder} does not exist yet; flad creates it at "
                   "start (if the name is mistyped, correct it in the configuration)")


def _check_channel_offline(ch: ChannelConfig, config_path: Path) -> list[Finding]:
    subject = f"channel {ch.name}"
    out: list[Finding] = []
    for key, folder in (("outbox", ch.outbox), ("inbox", ch.inbox)):
        out.append(_check_folder(f"{subject} {key}", folder))
    out += [Finding("warning", f"{subject} outbox", stray.line())
            for stray in strays.find_for(ch)]
    if ch.signing is not None:
        from flad.channel.settings import load_signer

        try:
            signer = load_signer(ch)
        except signing.SigningError as exc:
            out.append(Finding("error", f"{subject} signing", str(exc)))
        else:
            assert signer is not None
            report = signing.check_signer(signer)
            out += [Finding("error", f"{subject} signing", e) for e in report.errors]
            out += [Finding("warning", f"{subject} signing", w) for w in report.warnings]
            if report.ok:
                info = signing.describe_certificate(signer.certificate)
                out.append(Finding("ok", f"{subject} signing",
                                   f"{info['subject']}, valid until {info['not_after']}"))
    if ch.reply_trust is not None:
        try:
            certs = signing.load_certificates(ch.reply_trust)
            out.append(Finding("ok", f"{subject} reply_trust",
                               f"{len(certs)} trusted certificate(s)"))
        except signing.SigningError as exc:
            out.append(Finding("error", f"{subject} reply_trust", str(exc)))
    for app in ch.applications:
        if app.profile is not None:
            out.append(Finding("ok", f"{subject} application {app.name}",
                               f"{app.profile.expects()}; code {app.code}, root element "
                               f"{app.root_element}"))
        if app.xsd is None:
            continue
        try:
            xmlcheck.load_schema(app.xsd)
            out.append(Finding("ok", f"{subject} application {app.name}", f"XSD {app.xsd}"))
        except (xmlcheck.XmlRejected, ValueError, OSError) as exc:
            out.append(Finding("error", f"{subject} application {app.name}", str(exc)))
    if not ch.sftp.known_hosts.is_file():
        out.append(Finding("warning", f"{subject} sftp", f"known_hosts "
                           f"{ch.sftp.known_hosts} does not exist yet: run flad trust-host "
                           f"-c {shlex.quote(str(config_path))} {ch.name}"))
    if ch.quality in identity.MANDATARY_QUALITIES and ch.mandates is not None:
        out.append(Finding("ok", f"{subject} mandates", f"{len(ch.mandates)} mandate(s)"))
    return out


def _check_channel_online(ch: ChannelConfig, config_path: Path) -> list[Finding]:
    from flad.remote import SftpChannel, TransportError

    subject = f"channel {ch.name} sftp"
    transport = SftpChannel(ch.sftp, channel_name=ch.name, config_path=config_path)
    try:
        transport.connect()
        folders = transport.list_remote_folders()
    except TransportError as exc:
        return [Finding("error", subject, str(exc))]
    finally:
        transport.close()
    wanted = {REMOTE_IN[env] for env in ch.environments()} | {
        REMOTE_OUT[env] for env in ch.environments()}
    missing = sorted(wanted - set(folders) - OPTIONAL_FOLDERS)
    if missing:
        return [Finding("error", subject, f"connected, but the server has no "
                        f"{', '.join(missing)} folder")]
    out = [Finding("ok", subject, f"connected to {ch.sftp.username}@{ch.sftp.host}:"
                   f"{ch.sftp.port}; folders {', '.join(sorted(folders))}")]
    optional = sorted(OPTIONAL_FOLDERS - set(folders))
    if optional:
        out.append(Finding("warning", subject, f"the server has no {', '.join(optional)} "
                           "folder: files dropped under simulation/ (environment S) cannot "
                           "be sent; test and production are not affected"))
    return out
