"""Plugin manager: discovery, validation, conflicts, hook documentation."""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path

import pytest

from tidings.engine.channels import hookspecs
from tidings.engine.channels.contract import Channel, ChannelType, SendResult
from tidings.engine.channels.hookspecs import hookimpl
from tidings.engine.channels.plugin_manager import PluginError, describe_plugins, get_plugin_manager

BUILTIN_CHANNELS = {"smtp", "twilio-sms", "twilio-voice", "fcm", "apns", "webhook"}


def _hookspecs():
    return [f for _, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "tidings_spec")]


def test_every_hookspec_has_a_docstring():
    specs = _hookspecs()
    assert {f.__name__ for f in specs} >= {"register_channels", "register_event_sinks", "startup", "shutdown"}
    for f in specs:
        doc = inspect.getdoc(f) or ""
        assert len(doc) > 40, f"hookspec {f.__name__} needs a docstring stating its call semantics"
        assert "collected" in doc or "firstresult" in doc, f"{f.__name__}: say how results combine"


def test_every_hook_argument_is_typed_and_documented():
    """A plugin author reads the hookspec: each argument has a type and its docstring says what it is."""
    specs = _hookspecs()
    assert any(inspect.signature(f).parameters for f in specs), "some hook takes arguments"
    for f in specs:
        doc = inspect.getdoc(f) or ""
        hints = typing.get_type_hints(f)
        assert "return" in hints, f"hookspec {f.__name__}: annotate what it returns"
        for name in inspect.signature(f).parameters:
            assert name in hints, f"hookspec {f.__name__}: argument {name!r} has no type"
            assert f"``{name}``" in doc, f"hookspec {f.__name__}: its docstring does not describe ``{name}``"
    documented = (Path(__file__).parents[2] / "docs" / "writing-a-channel-plugin.md").read_text()
    for f in specs:
        assert f"`{f.__name__}(" in documented, f"the plugin guide does not list the hook {f.__name__}"


async def test_startup_and_shutdown_hooks_run_with_the_arguments_they_ask_for(settings):
    calls = []

    @hookimpl
    async def startup(settings):
        calls.append(("startup", settings.database_url))

    @hookimpl
    def shutdown():
        calls.append(("shutdown",))

    @hookimpl(specname="shutdown")
    def failing_shutdown():
        raise RuntimeError("disk gone")

    pm = get_plugin_manager([_module("lifecycle_plugin", startup=startup, shutdown=shutdown),
                             _module("broken_plugin", shutdown=failing_shutdown)], builtins=False)
    await pm.startup(settings)
    await pm.shutdown(settings)  # the broken plugin's error is logged; the other plugin still shuts down
    assert calls == [("startup", settings.database_url), ("shutdown",)]

    @hookimpl(specname="startup")
    def failing_startup():
        raise RuntimeError("no licence")

    pm = get_plugin_manager([_module("unlicensed_plugin", startup=failing_startup)], builtins=False)
    with pytest.raises(PluginError, match="unlicensed_plugin.*no licence"):
        await pm.startup(settings)


def test_builtins_are_loaded_and_described():
    pm = get_plugin_manager()
    assert BUILTIN_CHANNELS <= set(pm.channels)
    by_channel = {c: d for d in describe_plugins(pm) for c in d["channels"]}
    for name in BUILTIN_CHANNELS:
        assert by_channel[name]["source"] == "builtin"
    assert by_channel["smtp"]["module"] == "tidings.plugins.email_smtp"
    assert pm.channel("twilio-voice").channel_type is ChannelType.VOICE
    assert [c.name for c in pm.channels_of_type("EMAIL")] == ["smtp"]
    with pytest.raises(KeyError, match="unknown channel 'nope'"):
        pm.channel("nope")


def test_builtin_channels_describe_their_settings_and_secrets():
    pm = get_plugin_manager()
    secrets = {n: {f.name for f in c.config_fields if f.secret} for n, c in pm.channels.items()}
    assert secrets["smtp"] == {"password"}
    assert secrets["twilio-sms"] == {"auth_token"}
    assert secrets["fcm"] == {"access_token", "service_account_json"}
    assert secrets["apns"] == {"private_key"}
    assert secrets["webhook"] == {"secret"}
    for ch in pm.channels.values():
        assert ch.default_rate_limit is None or ch.default_rate_limit > 0


class _Dup(Channel):
    name = "smtp"
    channel_type = ChannelType.EMAIL

    async def send_batch(self, messages, config):
        return [SendResult.sent(m.message_id) for m in messages]


def _module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for k, v in hooks.items():
        setattr(mod, k, v)
    return mod


def test_duplicate_channel_name_fails_start_up_naming_both_sources():
    @hookimpl
    def register_channels():
        return [_Dup()]

    with pytest.raises(PluginError) as e:
        get_plugin_manager([_module("acme_mail_plugin", register_channels=register_channels)])
    msg = str(e.value)
    assert "'smtp'" in msg and "builtin" in msg and "tidings.plugins.email_smtp" in msg and "acme_mail_plugin" in msg


def test_malformed_channels_are_rejected_with_their_source():
    class Sync(_Dup):
        name = "sync-one"

        def send_batch(self, messages, config):  # not async
            return []

    @hookimpl
    def register_channels():
        return [Sync()]

    with pytest.raises(PluginError, match="sync-one.*bad_plugin.*async"):
        get_plugin_manager([_module("bad_plugin", register_channels=register_channels)], builtins=False)

    class BadName(_Dup):
        name = "Bad Name"

    @hookimpl
    def register_channels2():
        return [BadName()]

    with pytest.raises(PluginError, match="invalid name"):
        get_plugin_manager([_module("p2", register_channels=register_channels2)], builtins=False)


def test_misspelled_hook_fails_start_up():
    @hookimpl
    def register_chanels():
        return []

    with pytest.raises(PluginError, match="register_chanels"):
        get_plugin_manager([_module("typo_plugin", register_chanels=register_chanels)], builtins=False)


def test_event_sink_factories_are_collected_and_unique():
    class Sink:
        def __init__(self, name, config):
            self.name, self.kind, self.config = name, "memory", config
            self.records = []

        async def deliver(self, records):
            self.records.extend(records)

    class Factory:
        kind = "memory"
        config_fields = ()

        def __call__(self, name, config):
            return Sink(name, config)

    @hookimpl
    def register_event_sinks():
        return [Factory()]

    pm = get_plugin_manager([_module("sinks_a", register_event_sinks=register_event_sinks)], builtins=False)
    assert pm.event_sink_factories["memory"]("s1", {}).kind == "memory"
    with pytest.raises(PluginError, match="duplicate event-sink kind 'memory'.*sinks_a.*sinks_b"):
        get_plugin_manager([_module("sinks_a", register_event_sinks=register_event_sinks),
                            _module("sinks_b", register_event_sinks=register_event_sinks)], builtins=False)
