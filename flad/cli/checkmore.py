"""`flad check`'s findings about what ops teams watch: the metrics listener, how long
each certificate has left, and the proxy leg before the SSH one.

Kept apart from `checkup` (the set-up itself) so each stays one idea; `checkup`
calls these in its list.
"""

from __future__ import annotations

import datetime
import urllib.request

from flad import certlife
from flad.cli.checkup import Finding
from flad.config import ChannelConfig, Config
from flad.listen_address import ListenAddress
from flad.metrics.server import bind_problem

#: How long `flad check` waits for a flad already listening on the metrics address.
PROBE_SECONDS = 3.0


def check_metrics(config: Config) -> list[Finding]:
    """The configured address, and whether the service could listen there now.

    A busy address may be the running service itself: asked for /healthz, a flad
    answers `ok`, and that is fine.
    """
    address = config.daemon.metrics_listen
    subject = "daemon.metrics_listen"
    if address is None:
        return [Finding("ok", subject, "off (set metrics_listen = \"127.0.0.1:9464\" to "
                        "serve /metrics, /healthz and /readyz)")]
    shown = address.shown()
    scope = "loopback only" if address.loopback else "open beyond loopback (public)"
    problem = bind_problem(address)
    if problem is None:
        return [Finding("ok", subject, f"{shown} ({scope}) is free: the service serves "
                        "/metrics, /healthz and /readyz there")]
    if _a_flad_answers(address):
        return [Finding("ok", subject, f"{shown} ({scope}): a running flad answers there")]
    return [Finding("error", subject, f"cannot listen on {shown}: {problem}; the service "
                    "would run without metrics: choose another address or stop what "
                    "listens there")]


def _a_flad_answers(address: ListenAddress) -> bool:
    host = f"[{address.host}]" if ":" in address.host else address.host
    try:
        with urllib.request.urlopen(f"http://{host}:{address.port}/healthz",
                                    timeout=PROBE_SECONDS) as answer:
            return bool(answer.status == 200 and answer.headers.get("Server", "")
                        .startswith("flad"))
    except (OSError, ValueError):
        return False


def check_lifetimes(config: Config, channel: ChannelConfig,
                    now: datetime.datetime | None = None) -> list[Finding]:
    """Days left for the signing certificate and each reply_trust certificate."""
    from flad.channel.settings import load_signer

    out: list[Finding] = []
    for life in certlife.of_channel(channel, load_signer,
                                    now or datetime.datetime.now(datetime.UTC)):
        subject = f"channel {channel.name} {life.role} lifetime"
        if life.expired or life.days_left <= certlife.URGENT_DAYS:
            level = "error"
        elif life.days_left <= config.daemon.cert_warn_days:
            level = "warning"
        else:
            level = "ok"
        text = (life.text() if level != "ok" else
                f"{life.subject}: {life.days_left:.0f} day(s) left (until "
                f"{life.not_after:%Y-%m-%d})")
        out.append(Finding(level, subject, text))
    return out


def check_proxy_leg(channel: ChannelConfig) -> tuple[list[Finding], bool]:
    """The leg to the proxy and through it, before the SSH one: (findings, leg works).

    Names the proxy and what it did: reached and opened the tunnel, refused (or
    refused the credentials), could not be reached, or stalled (no answer in time).
    """
    from flad.remote import TransportError
    from flad.remote.proxy import open_through

    settings = channel.sftp
    if settings.proxy is None:
        return [], True
    subject = f"channel {channel.name} proxy"
    try:
        sock = open_through(settings.proxy, settings.host, settings.port,
                            settings.connect_timeout)
    except TransportError as exc:
        text = str(exc)
        if "no answer within" in text:
            text += " (the proxy stalled)"
        return [Finding("error", subject, text)], False
    sock.close()
    return [Finding("ok", subject, f"{settings.proxy.shown} reached; it opened a tunnel "
                    f"to {settings.host}:{settings.port}")], True
