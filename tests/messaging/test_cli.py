"""`tidings plugins`, `tidings send`, `tidings templates ls` as an operator runs them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tidings.engine.platform.config import Settings

TIDINGS = str(Path(sys.executable).parent / "tidings")


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDINGS_HOME": str(settings.home), "TIDINGS_DATABASE_URL": settings.database_url}
    return subprocess.run([TIDINGS, *args], env=env, capture_output=True, text=True, timeout=60)


def test_plugins_lists_channels_and_sources(settings):
    out = run(settings, "plugins")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert "smtp (EMAIL, 10/s)" in lines["email_smtp"] and "builtin" in lines["email_smtp"]
    assert "twilio-sms (SMS, 1/s)" in lines["twilio"]
    assert "apns (PUSH, 500/s)" in lines["apns"] and "builtin" in lines["apns"] and "tidings.plugins.apns" in lines["apns"]
    outbox = next(line for line in lines.values() if "outbox (any type)" in line)
    assert "tidings.plugins.outbox" in outbox
    # event-sink kinds (what an event stream's `sink.kind` names) are listed with their plugin
    assert out.stdout.splitlines()[0].split()[:5] == ["PLUGIN", "SOURCE", "CHANNELS", "EVENT", "SINKS"]
    assert "webhook, ndjson" in lines["event_sinks"] and "tidings.plugins.event_sinks" in lines["event_sinks"]
    assert lines["apns"].split()[-2] == "-"  # a channel plugin provides no sink


def test_send_and_templates_ls(api, settings, smtp_sink):
    api.put("/v1/templates/receipt", json={"channel": "EMAIL", "subject": "Receipt {{ data.n }}", "text": "Thanks"})
    out = run(settings, "send", "--workspace", "acme", "--to", "cli@example.com", "--template", "receipt",
              "--data", '{"n": 7}')
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("cli@example.com: sent ")
    assert smtp_sink.to("cli@example.com")[0]["Subject"] == "Receipt 7"
    out = run(settings, "send", "--workspace", "acme", "--to", "x@example.com", "--subject", "Hi", "--text", "inline")
    assert out.returncode == 0 and smtp_sink.to("x@example.com")[0]["Subject"] == "Hi"
    bad = run(settings, "send", "--workspace", "acme", "--to", "x@example.com", "--template", "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr and "template_id" in bad.stderr
    assert run(settings, "send", "--workspace", "nobody", "--to", "x@example.com", "--text", "t").returncode == 2
    listing = run(settings, "templates", "ls", "--workspace", "acme").stdout
    assert "receipt" in listing and "EMAIL" in listing
