"""Logs: JSON lines, stable names, secrets redacted, a dead stream never breaks flad."""

from __future__ import annotations

import io
import json

from flad import logs


def test_json_lines_with_context_and_redaction() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    logs.get().bind(channel="acme").info("go_sent", submission=3, passphrase="hunter2")
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "go_sent" and event["channel"] == "acme"
    assert event["submission"] == 3 and event["level"] == "info" and "timestamp" in event
    assert "hunter2" not in line and event["passphrase"] == "***"


def test_level_filters() -> None:
    out = io.StringIO()
    logs.configure("json", "warning", stream=out)
    logs.get().info("quiet")
    logs.get().warning("loud")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["loud"]


def test_a_closed_stream_does_not_raise() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    out.close()
    logs.get().error("channel_failed", error="x")  # must not raise
