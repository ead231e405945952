"""The example third-party plugin, installed with pip and loaded from entry points."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tidings.engine.channels.contract import Channel, ChannelType, OutgoingMessage, SendResult, send_with_retry
from tidings.engine.channels.hookspecs import hookimpl
from tidings.engine.channels.plugin_manager import PluginError, describe_plugins, get_plugin_manager

EXAMPLE = Path(__file__).resolve().parents[1] / "example_plugin"


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory):
    # Build from a copy so the source tree stays clean; re-installing is harmless.
    src = tmp_path_factory.mktemp("example") / "example_plugin"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet", str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    importlib.invalidate_caches()
    dist = md.distribution("tidings-example-channel")
    assert [ep.name for ep in dist.entry_points if ep.group == "tidings"] == ["example"]
    return dist


async def test_third_party_plugin_is_discovered_and_sends(example_installed, http_server):
    def receiver(req):
        if req.headers.get("authorization") != "Bearer k-123":
            return 401, {"error": "auth"}
        body = req.json()
        return 200, {"id": f"ext-{body['id']}"}

    server = http_server(receiver)
    pm = get_plugin_manager()
    info = next(d for d in describe_plugins(pm) if "example-post" in d["channels"])
    assert info["source"] == f"tidings-example-channel {example_installed.version}"
    assert info["name"] == "example" and info["module"] == "tidings_example_channel"

    ch = pm.channel("example-post")
    assert ch.channel_type is ChannelType.CUSTOM
    messages = [OutgoingMessage(message_id=f"x{i}", to=f"+1555000{i}", channel_type=ChannelType.CUSTOM,
                                body=f"hello {i}") for i in range(3)]
    results = await send_with_retry(ch, messages, {"url": server.url + "/in", "api_key": "k-123"})
    assert [(r.status, r.provider_message_id) for r in results] == [("sent", f"ext-x{i}") for i in range(3)]
    assert [r.json()["body"] for r in server.requests] == ["hello 0", "hello 1", "hello 2"]

    [bad] = await ch.send_batch(messages[:1], {"url": server.url, "api_key": "wrong"})
    assert bad.status == "failed" and bad.permanent


def test_conflicting_plugins_fail_start_up_naming_both(example_installed):
    class Clash(Channel):
        name = "example-post"
        channel_type = ChannelType.CUSTOM

        async def send_batch(self, messages, config):
            return [SendResult.sent(m.message_id) for m in messages]

    @hookimpl
    def register_channels():
        return [Clash()]

    other = types.ModuleType("other_vendor_plugin")
    other.register_channels = register_channels
    with pytest.raises(PluginError) as e:
        get_plugin_manager([other])
    msg = str(e.value)
    assert "duplicate channel name 'example-post'" in msg
    assert "tidings-example-channel 0.1.0" in msg and "other_vendor_plugin" in msg
