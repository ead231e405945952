"""Which channel sends a workspace's messages of each type, with which settings.

For an endpoint channel type (EMAIL, SMS...) the serving channel is, in order:
1. the channel the workspace configured for that type (``PUT /v1/channels/{name}``);
2. the environment's default (EMAIL -> ``smtp`` when ``TIDINGS_SMTP_HOST`` is set);
3. the ``outbox`` channel, which keeps the message in the database.
Stored settings hold secrets, sealed by ``tidings.engine.channels.secrets``: they leave this module opened only in a
``Route`` (for the channel's send), and otherwise through ``redact_config``.
"""
from __future__ import annotations

import os
import re
from functools import partial
from typing import Any, Mapping
from urllib.parse import quote

import msgspec
from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.exc import IntegrityError

from tidings.engine.channels import secrets as channel_secrets
from tidings.engine.channels.contract import (
    ChannelConfigError, ChannelType, redact_config, resolve_config, secret_keys,
)
from tidings.engine.platform.clock import ms_to_iso, now_ms
from tidings.engine.platform.db import reading, writing
from tidings.engine.platform.errors import Conflict, InvalidInput, NotFound
from tidings.engine.channels.tables import channel_configs, channel_routes
from tidings.engine.channels.plugin_manager import TidingsPluginManager, get_plugin_manager
from tidings.engine.workspaces.service import WorkspaceRef

ALL_TYPES = [t.value for t in ChannelType]
REDACTED = "***"
MAX_RATE = 1_000_000.0


def load_plugins() -> TidingsPluginManager:
    """Every plugin of the `tidings` entry-point group, built-ins (the outbox fallback included) and third-party."""
    return get_plugin_manager()


class Route(msgspec.Struct, kw_only=True):
    """A resolved sender: channel object, raw settings (secrets included), rate limit and bucket owner."""

    name: str
    channel: Any
    config: dict[str, Any]
    rate_limit: float | None
    bucket_workspace: int  # 0: the environment's channels, one provider account shared by all workspaces
    source: str  # workspace | environment | fallback
    error: str | None = None  # set when the configured channel cannot be used (plugin missing)


def env_defaults(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, dict[str, Any], float | None]]:
    """Channels configured by environment variables: {channel type: (channel name, settings, rate limit)}."""
    env = os.environ if environ is None else environ
    out: dict[str, tuple[str, dict[str, Any], float | None]] = {}
    if env.get("TIDINGS_SMTP_HOST"):
        cfg = {"host": env["TIDINGS_SMTP_HOST"],
               "from_address": env.get("TIDINGS_SMTP_FROM") or "Tidings <tidings@localhost>"}
        for var, key in (("PORT", "port"), ("USERNAME", "username"), ("PASSWORD", "password"),
                         ("SECURITY", "security"), ("TIMEOUT", "timeout"), ("CONNECTIONS", "connections")):
            if env.get(f"TIDINGS_SMTP_{var}"):
                cfg[key] = env[f"TIDINGS_SMTP_{var}"]
        rate = env.get("TIDINGS_SMTP_RATE_LIMIT")
        out["EMAIL"] = ("smtp", cfg, float(rate) if rate else None)
    return out


def _effective_rate(channel: Any, configured: float | None) -> float | None:
    return configured if configured is not None else getattr(channel, "default_rate_limit", None)


def routes_for(conn: Connection, plugins: TidingsPluginManager, workspace_id: int,
               types: list[str]) -> dict[str, Route]:
    rows = conn.execute(
        select(channel_routes.c.channel_type, channel_configs.c.name, channel_configs.c.config,
               channel_configs.c.rate_limit)
        .join(channel_configs, (channel_configs.c.workspace_id == channel_routes.c.workspace_id)
              & (channel_configs.c.name == channel_routes.c.name))
        .where(channel_routes.c.workspace_id == workspace_id, channel_routes.c.channel_type.in_(types))
    ).all()
    configured = {r.channel_type: r for r in rows}
    defaults = env_defaults()
    out: dict[str, Route] = {}
    for t in types:
        if t in configured:
            r = configured[t]
            ch = plugins.channels.get(r.name)
            error = None if ch else f"channel {r.name!r} is configured but its plugin is not loaded"
            try:  # a secret no configured key opens fails the sends here, naming the channel, not in a plugin
                config = channel_secrets.open_config(r.name, r.config)
            except channel_secrets.SecretUnreadable as exc:
                config, error = {}, error or str(exc)
            if ch is not None and not error and _wants_callback(ch, config):
                config["status_callback_url"] = feedback_url(_workspace_name(conn, workspace_id), r.name)
            out[t] = Route(name=r.name, channel=ch, config=config, rate_limit=_effective_rate(ch, r.rate_limit),
                           bucket_workspace=workspace_id, source="workspace", error=error)
        elif t in defaults and defaults[t][0] in plugins.channels:
            name, cfg, rate = defaults[t]
            ch = plugins.channels[name]
            out[t] = Route(name=name, channel=ch, config=cfg, rate_limit=_effective_rate(ch, rate),
                           bucket_workspace=0, source="environment")
        else:
            ch = plugins.channels.get("outbox")
            out[t] = Route(name="outbox", channel=ch, config={}, rate_limit=None, bucket_workspace=workspace_id,
                           source="fallback", error=None if ch else "no channel serves this type")
    return out


def _wants_callback(channel: Any, config: dict[str, Any]) -> bool:
    """A channel whose provider calls back (a `status_callback_url` setting, as Twilio's) left unset: with a
    public URL, point it at our own feedback endpoint, which verifies it with this very config."""
    return (not config.get("status_callback_url") and bool(os.environ.get("TIDINGS_PUBLIC_URL"))
            and any(f.name == "status_callback_url" for f in getattr(channel, "config_fields", ())))


def _workspace_name(conn: Connection, workspace_id: int) -> str:
    from tidings.engine.workspaces.tables import workspaces

    return conn.execute(select(workspaces.c.name).where(workspaces.c.id == workspace_id)).scalar_one()


# --------------------------------------------------------------------------- API side


class ChannelPut(msgspec.Struct, forbid_unknown_fields=True):
    config: dict[str, Any] = {}
    rate_limit: float | None = None  # messages per second; None = the channel's default_rate_limit
    channel_types: list[ChannelType] | None = None  # default: the channel's own type (outbox: every type)
    # Authenticates POST /feedback/{workspace}/{name} in Tidings' generic format, for channels without a
    # provider callback format of their own ("***" keeps the stored one). Channels with one (Twilio)
    # are verified with `config` (the auth token) instead.
    feedback_secret: str | None = None


class ChannelOut(msgspec.Struct):
    name: str
    channel_types: list[str]
    config: dict[str, Any]
    rate_limit: float | None
    effective_rate_limit: float | None
    updated_at: str
    feedback_url: str  # where the provider (or your MTA) posts delivery feedback for this channel
    feedback_secret: str | None = None  # "***" when set


def feedback_url(ws_name: str, channel: str) -> str:
    """POST /feedback/{workspace}/{channel}, under TIDINGS_PUBLIC_URL when it is set."""
    base = os.environ.get("TIDINGS_PUBLIC_URL", "").rstrip("/")
    return f"{base}/feedback/{quote(ws_name, safe='')}/{quote(channel, safe='')}"


def _config_field(message: str) -> str:
    unknown = re.search(r"unknown setting\(s\) for channel '[^']*': ([^,\s]+)", message)
    named = re.findall(r"setting '([^']+)'", message)
    return "config." + (unknown.group(1) if unknown else named[-1] if named else "") if (unknown or named) else "config"


def put_channel(db: Engine, plugins: TidingsPluginManager, workspace: WorkspaceRef, name: str, body: ChannelPut) -> ChannelOut:
    channel = plugins.channels.get(name)
    if channel is None:
        raise NotFound(f"no channel plugin named {name!r} (loaded: {', '.join(sorted(plugins.channels))})", field="name")
    types = _served_types(channel, name, body)
    if body.rate_limit is not None and not 0 < body.rate_limit <= MAX_RATE:
        raise InvalidInput(f"rate_limit must be a number of messages per second in (0, {MAX_RATE:g}]", field="rate_limit")
    with writing(db) as conn:
        row = conn.execute(select(channel_configs).where(
            channel_configs.c.workspace_id == workspace.id, channel_configs.c.name == name)).first()
        config = _checked_config(channel, name, body.config, row, workspace)
        secret = _checked_feedback_secret(name, body.feedback_secret, row, workspace)
        # Sealed before anything is written: without a key the whole PUT is refused, nothing stored plain.
        stored_config = channel_secrets.seal_config(name, secret_keys(channel), config)
        stored_secret = channel_secrets.seal_value(name, "feedback_secret", secret, "feedback_secret")
        _check_types_free(conn, workspace, name, types)
        now = now_ms()
        if row is None:
            conn.execute(channel_configs.insert().values(workspace_id=workspace.id, name=name, config=stored_config,
                                                         rate_limit=body.rate_limit, feedback_secret=stored_secret,
                                                         created_at=now, updated_at=now))
        else:
            conn.execute(update(channel_configs).where(channel_configs.c.id == row.id).values(
                config=stored_config, rate_limit=body.rate_limit, feedback_secret=stored_secret, updated_at=now))
        _route(conn, workspace, name, types)
    return _out(workspace, channel, name, types, config, body.rate_limit, now, secret)


def _served_types(channel: Any, name: str, body: ChannelPut) -> list[str]:
    """The channel types the PUT asks the channel to serve (all it can, when it names none)."""
    any_type = getattr(channel, "serves_any_type", False)
    types = [t.value for t in body.channel_types] if body.channel_types else (
        ALL_TYPES if any_type else [channel.channel_type.value])
    if not any_type and types != [channel.channel_type.value]:
        raise InvalidInput(f"channel {name!r} only serves {channel.channel_type.value}", field="channel_types")
    return types


def _checked_config(channel: Any, name: str, given: dict[str, Any], row: Any, workspace: WorkspaceRef) -> dict[str, Any]:
    """The settings to store, in plain: "***" (what GET shows) keeps the stored secret; checked by the channel."""
    config = dict(given)
    for key in secret_keys(channel):
        if config.get(key) == REDACTED:
            if row is None or key not in row.config:
                raise InvalidInput(f"no stored value for {key!r} to keep; send the real value", field=f"config.{key}")
            config[key] = _stored_secret(name, key, row.config[key], workspace, f"config.{key}")
    try:
        # The channel's own resolve_config when it has one: it may check more than the fields (a key's format).
        (channel.resolve_config if hasattr(channel, "resolve_config") else partial(resolve_config, channel))(config)
    except ChannelConfigError as exc:
        raise InvalidInput(str(exc), field=_config_field(str(exc))) from None
    return config


def _checked_feedback_secret(name: str, secret: str | None, row: Any, workspace: WorkspaceRef) -> str | None:
    if secret == REDACTED:
        if row is None or not row.feedback_secret:
            raise InvalidInput("no stored feedback_secret to keep; send the real value", field="feedback_secret")
        secret = _stored_secret(name, "feedback_secret", row.feedback_secret, workspace, "feedback_secret")
    if secret is not None and not 16 <= len(secret) <= 255:
        raise InvalidInput("feedback_secret is 16-255 characters", field="feedback_secret")
    return secret


def _check_types_free(conn: Connection, workspace: WorkspaceRef, name: str, types: list[str]) -> None:
    taken = conn.execute(select(channel_routes.c.channel_type, channel_routes.c.name).where(
        channel_routes.c.workspace_id == workspace.id, channel_routes.c.channel_type.in_(types),
        channel_routes.c.name != name)).all()
    if taken:
        t, other = taken[0]
        raise Conflict(f"{t} is already served by channel {other!r}; DELETE /v1/channels/{other} first",
                       field="channel_types")


def _route(conn: Connection, workspace: WorkspaceRef, name: str, types: list[str]) -> None:
    """The channel serves exactly `types` from now on."""
    conn.execute(delete(channel_routes).where(channel_routes.c.workspace_id == workspace.id, channel_routes.c.name == name))
    try:
        conn.execute(channel_routes.insert(), [{"workspace_id": workspace.id, "channel_type": t, "name": name} for t in types])
    except IntegrityError:  # a concurrent PUT took the type first
        raise Conflict("another channel now serves one of these types; retry", field="channel_types") from None


def _stored_secret(channel: str, key: str, value: Any, workspace: WorkspaceRef, field: str) -> Any:
    """A stored secret kept by "***", opened so it is checked and sealed again like a new value."""
    try:
        return channel_secrets.open_value(channel, key, value, workspace.name)
    except channel_secrets.SecretUnreadable as exc:
        raise Conflict(f"{exc}; \"***\" cannot keep it: send the real value", field=field) from None


def _out(workspace: WorkspaceRef, channel: Any, name: str, types: list[str], config: dict, rate: float | None,
         updated: int, secret: str | None) -> ChannelOut:
    return ChannelOut(name=name, channel_types=types, config=redact_config(channel, config) if channel else
                      {k: REDACTED for k in config}, rate_limit=rate,
                      effective_rate_limit=_effective_rate(channel, rate), updated_at=ms_to_iso(updated),
                      feedback_url=feedback_url(workspace.name, name), feedback_secret=REDACTED if secret else None)


class ConfiguredChannel(msgspec.Struct):
    """A channel the workspace configured, as GET /v1/channels shows it (secret settings "***"), and when."""

    out: ChannelOut
    created_at: int  # epoch ms
    updated_at: int


def configured_channels(db: Engine, plugins: TidingsPluginManager, workspace: WorkspaceRef) -> dict[str, ConfiguredChannel]:
    """The workspace's configured channels by name (what the Pinpoint-compatible API shows as its channels)."""
    with reading(db) as conn:
        return _configured(conn, plugins, workspace)


def _configured(conn: Connection, plugins: TidingsPluginManager, workspace: WorkspaceRef) -> dict[str, ConfiguredChannel]:
    rows = conn.execute(select(channel_configs).where(channel_configs.c.workspace_id == workspace.id)
                        .order_by(channel_configs.c.name)).all()
    types: dict[str, list[str]] = {}
    for t, n in conn.execute(select(channel_routes.c.channel_type, channel_routes.c.name)
                             .where(channel_routes.c.workspace_id == workspace.id)):
        types.setdefault(n, []).append(t)
    return {r.name: ConfiguredChannel(
        out=_out(workspace, plugins.channels.get(r.name), r.name, sorted(types.get(r.name, []), key=ALL_TYPES.index),
                 r.config, r.rate_limit, r.updated_at, r.feedback_secret),
        created_at=r.created_at, updated_at=r.updated_at) for r in rows}


def list_channels(db: Engine, plugins: TidingsPluginManager, workspace: WorkspaceRef) -> dict[str, Any]:
    with reading(db) as conn:
        configured = _configured(conn, plugins, workspace)
        routes = routes_for(conn, plugins, workspace.id, ALL_TYPES)
    return {"items": [c.out for c in configured.values()],
            "routes": {t: {"channel": r.name, "source": r.source, "rate_limit": r.rate_limit,
                           **({"error": r.error} if r.error else {})} for t, r in routes.items()}}


def delete_channel(db: Engine, workspace: WorkspaceRef, name: str) -> None:
    with writing(db) as conn:
        conn.execute(delete(channel_routes).where(channel_routes.c.workspace_id == workspace.id, channel_routes.c.name == name))
        n = conn.execute(delete(channel_configs).where(channel_configs.c.workspace_id == workspace.id,
                                                       channel_configs.c.name == name)).rowcount
    if not n:
        raise NotFound(f"channel {name!r} is not configured in this workspace", field="name")
