"""Channels: each Pinpoint channel of an application is a native channel of the workspace (PUT /v1/channels,
docs/channels.md), so one configured here is what native sends, journeys and SendMessages use, and one
configured natively reads back here.

| Pinpoint | native channel |
| Email | `smtp`: FromAddress -> from_address; the relay (host, credentials) is the channel's, or the operator's |
| Sms, Voice | `twilio-sms`, `twilio-voice`: ShortCode / SenderId -> from_number; the Twilio account is native |
| Gcm | `fcm`: ServiceJson -> service_account_json (and its project_id) |
| Apns, ApnsSandbox, ApnsVoip, ApnsVoipSandbox | `apns`: TokenKey, TokenKeyId, TeamId, BundleId -> private_key, key_id, team_id, topic; sandbox -> environment, voip -> push_type |

Settings are written through `put_channel`, the native PUT's own path, so secrets are sealed exactly as native
ones are; answers carry HasCredential / HasTokenKey, never a secret. A member Tidings would not apply is
refused by name (BadRequestException), never dropped.
"""
from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, Callable

from tidings.api.pinpoint.apps import ACCOUNT, REGION
from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException, NotFoundException
from tidings.api.pinpoint.protocol import service_model
from tidings.engine.channels.config import (
    REDACTED,
    ChannelPut,
    ConfiguredChannel,
    configured_channels,
    delete_channel,
    env_defaults,
    put_channel,
)
from tidings.engine.channels.contract import ChannelType
from tidings.engine.platform.clock import ms_to_iso
from tidings.engine.platform.errors import Conflict, InvalidInput, NotFound
from tidings.engine.workspaces.service import WorkspaceRef


@dataclass(frozen=True)
class Kind:
    op: str  # the operations' infix: UpdateEmailChannel
    platform: str  # Pinpoint's Platform, and the key of GetChannels
    channel: str  # the native channel
    channel_type: str  # the endpoint type the native channel serves
    environment: str | None = None  # APNs: production or sandbox
    voip: bool = False  # APNs: VoIP pushes (push_type voip)

    @functools.cached_property
    def request(self) -> str:
        """The request member of Update*Channel, as botocore's model names it (EmailChannelRequest, ...)."""
        return service_model().operation_model(f"Update{self.op}Channel").input_shape.serialization["payload"]

    @functools.cached_property
    def response(self) -> str:
        return service_model().operation_model(f"Get{self.op}Channel").output_shape.serialization["payload"]

    def member(self, name: str) -> str:
        return f"{self.request}.{name}"


KINDS = (
    Kind("Email", "EMAIL", "smtp", "EMAIL"),
    Kind("Sms", "SMS", "twilio-sms", "SMS"),
    Kind("Voice", "VOICE", "twilio-voice", "VOICE"),
    Kind("Gcm", "GCM", "fcm", "PUSH"),
    Kind("Apns", "APNS", "apns", "PUSH", environment="production"),
    Kind("ApnsSandbox", "APNS_SANDBOX", "apns", "PUSH", environment="sandbox"),
    Kind("ApnsVoip", "APNS_VOIP", "apns", "PUSH", environment="production", voip=True),
    Kind("ApnsVoipSandbox", "APNS_VOIP_SANDBOX", "apns", "PUSH", environment="sandbox", voip=True),
)

# Which request member a native setting comes from, to name it when the channel refuses a value.
MEMBERS = {"smtp": {"from_address": "FromAddress"}, "twilio-sms": {"from_number": "SenderId"},
           "fcm": {"service_account_json": "ServiceJson", "project_id": "ServiceJson"},
           "apns": {"private_key": "TokenKey", "key_id": "TokenKeyId", "team_id": "TeamId", "topic": "BundleId"}}
VOIP_SUFFIX = ".voip"  # APNs takes VoIP pushes on the topic <bundle id>.voip


def _workspace(ctx: Context) -> WorkspaceRef:
    if ctx.workspace is None:  # ApplicationId is a required label of every channel operation
        raise NotFoundException("Resource not found")
    return ctx.workspace


def kind_of(configured: ConfiguredChannel) -> Kind | None:
    """The Pinpoint channel a configured native channel is, or None (webhook, outbox, a third-party plugin)."""
    name, config = configured.out.name, configured.out.config
    if name == "apns":
        environment = config.get("environment") or "production"
        voip = config.get("push_type") == "voip"
        return next(k for k in KINDS if k.channel == "apns" and k.environment == environment and k.voip == voip)
    return next((k for k in KINDS if k.channel == name), None)


def _has_credential(configured: ConfiguredChannel) -> bool:
    return any(value == REDACTED for value in configured.out.config.values())


def _channel(ctx: Context, kind: Kind, configured: ConfiguredChannel) -> dict[str, Any]:
    """What every channel response carries (ChannelResponse's members)."""
    return {"ApplicationId": _workspace(ctx).name, "CreationDate": ms_to_iso(configured.created_at),
            "LastModifiedDate": ms_to_iso(configured.updated_at), "Enabled": True, "IsArchived": False,
            "HasCredential": _has_credential(configured), "Id": kind.channel}


def _per_second(configured: ConfiguredChannel) -> int | None:
    rate = configured.out.effective_rate_limit
    return None if rate is None else max(1, int(rate))


def _response(ctx: Context, kind: Kind, configured: ConfiguredChannel) -> dict[str, Any]:
    out = {**_channel(ctx, kind, configured), "Platform": kind.platform}
    config = configured.out.config
    if kind.channel == "smtp":
        _, address = parseaddr(config.get("from_address") or "")
        out.update(FromAddress=config.get("from_address"), Identity=_identity_arn(address.rpartition("@")[2]))
        if (rate := _per_second(configured)) is not None:
            out["MessagesPerSecond"] = rate
    elif kind.channel == "twilio-sms":
        sender = config.get("from_number") or ""
        out["ShortCode" if sender.isdigit() else "SenderId"] = sender
        if (rate := _per_second(configured)) is not None:
            out.update(TransactionalMessagesPerSecond=rate, PromotionalMessagesPerSecond=rate)
    elif kind.channel == "fcm":
        out.update(DefaultAuthenticationMethod="TOKEN",
                   HasFcmServiceCredentials=config.get("service_account_json") == REDACTED)
    elif kind.channel == "apns":
        out.update(DefaultAuthenticationMethod="KEY", HasTokenKey=config.get("private_key") == REDACTED)
    return {k: v for k, v in out.items() if v is not None}


def _identity_arn(domain: str) -> str:
    """The sending identity as Pinpoint names it (an SES identity ARN): the From address's domain."""
    return f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/{domain}"


# ---- Pinpoint request -> native settings ----------------------------------------------------------------
# Each returns the settings to PUT (secrets left "***" are kept by put_channel) and, for a new channel, its
# rate limit; `current` is the channel as configured now, or None.

Settings = tuple[dict[str, Any], float | None]


def _refuse_set(kind: Kind, request: dict[str, Any], why: dict[str, str]) -> None:
    for name, reason in why.items():
        if request.get(name) not in (None, ""):
            raise BadRequestException(f"{kind.member(name)}: not applied by Tidings; {reason}")


def _email(kind: Kind, request: dict[str, Any], current: ConfiguredChannel | None) -> Settings:
    _refuse_set(kind, request, {
        "ConfigurationSet": "there are no SES configuration sets: delivery events go to event streams "
                            "(PutEventStream, docs/events.md)",
        "RoleArn": "Tidings assumes no IAM roles",
        "OrchestrationSendingRoleArn": "Tidings assumes no IAM roles"})
    from_address = request["FromAddress"]
    _, address = parseaddr(from_address)
    if "@" not in address:
        raise BadRequestException(f"{kind.member('FromAddress')}: an email address (\"news@example.com\" or "
                                  "\"Shop <news@example.com>\")")
    identity = request["Identity"].rpartition("identity/")[2].lower()
    if identity not in (address.lower(), address.rpartition("@")[2].lower()):
        raise BadRequestException(f"{kind.member('Identity')}: names the identity {identity!r}, but FromAddress is "
                                  f"{address!r}; Tidings sends from FromAddress through the SMTP relay, so the "
                                  "identity must be that address or its domain")
    if current is not None:
        return {**current.out.config, "from_address": from_address}, None
    relay = env_defaults().get("EMAIL")
    if relay is None:
        raise BadRequestException(f"{kind.request}: this workspace has no SMTP relay, and Pinpoint's request cannot "
                                  "name one: configure it with PUT /v1/channels/smtp (host, port, username, password; "
                                  "docs/channels.md), or the operator sets TIDINGS_SMTP_HOST; UpdateEmailChannel "
                                  "then sets its From address")
    _, config, rate = relay
    if config.get("username") or config.get("password"):
        # The operator's credentials are not copied into a workspace's settings, which the workspace may edit.
        raise BadRequestException(f"{kind.request}: the operator's SMTP relay authenticates with the operator's "
                                  "credentials, which are not copied into a workspace's channel: configure the "
                                  "workspace's own relay with PUT /v1/channels/smtp first; UpdateEmailChannel then "
                                  "sets its From address")
    return {**{k: v for k, v in config.items() if k != "from_address"}, "from_address": from_address}, rate


def _twilio_account(kind: Kind, current: ConfiguredChannel | None) -> ConfiguredChannel:
    if current is None:
        raise BadRequestException(f"{kind.request}: Tidings sends {kind.channel_type} through Twilio, whose account "
                                  "(account_sid, auth_token, from_number) Pinpoint's request cannot carry: configure "
                                  f"it with PUT /v1/channels/{kind.channel} (docs/channels.md) first")
    return current


def _sms(kind: Kind, request: dict[str, Any], current: ConfiguredChannel | None) -> Settings:
    config = dict(_twilio_account(kind, current).out.config)
    short_code, sender_id = request.get("ShortCode"), request.get("SenderId")
    if short_code and sender_id and short_code != sender_id:
        raise BadRequestException(f"{kind.member('ShortCode')}: the Twilio channel sends from one sender "
                                  "(from_number); give ShortCode or SenderId, not both")
    if short_code or sender_id:
        config["from_number"] = short_code or sender_id
    return config, None


def _voice(kind: Kind, request: dict[str, Any], current: ConfiguredChannel | None) -> Settings:
    return dict(_twilio_account(kind, current).out.config), None


def _gcm(kind: Kind, request: dict[str, Any], current: ConfiguredChannel | None) -> Settings:
    _refuse_set(kind, request, {"ApiKey": "it is a legacy FCM server key, and Google retired the legacy API; "
                                          "Tidings sends through FCM HTTP v1: give ServiceJson (a service-account "
                                          "key) instead"})
    method = (request.get("DefaultAuthenticationMethod") or "TOKEN").upper()
    if method != "TOKEN":
        raise BadRequestException(f"{kind.member('DefaultAuthenticationMethod')}: TOKEN (ServiceJson) is the only "
                                  f"method Tidings applies, got {request['DefaultAuthenticationMethod']!r}")
    config = dict(current.out.config) if current is not None else {}
    raw = request.get("ServiceJson")
    if raw:
        try:
            account = json.loads(raw)
        except ValueError:
            raise BadRequestException(f"{kind.member('ServiceJson')}: not JSON (the service-account key file's "
                                      "content)") from None
        missing = [k for k in ("project_id", "client_email", "private_key")
                   if not isinstance(account, dict) or not account.get(k)]
        if missing:
            raise BadRequestException(f"{kind.member('ServiceJson')}: a service-account key has "
                                      f"{', '.join(missing)}; this one lacks them")
        config.pop("access_token", None)  # the service account authenticates from now on
        config.update(project_id=account["project_id"], service_account_json=account)
    elif current is None:
        raise BadRequestException(f"{kind.member('ServiceJson')}: required to configure FCM (the content of a "
                                  "service-account key file)")
    return config, None


def _apns(kind: Kind, request: dict[str, Any], current: ConfiguredChannel | None) -> Settings:
    certificate = ("Tidings's APNs channel authenticates with a token key (.p8): give TokenKey, TokenKeyId, "
                   "TeamId and BundleId")
    _refuse_set(kind, request, {"Certificate": certificate, "PrivateKey": certificate})
    method = (request.get("DefaultAuthenticationMethod") or "KEY").upper()
    if method not in ("KEY", "TOKEN"):
        raise BadRequestException(f"{kind.member('DefaultAuthenticationMethod')}: KEY (a token key) is the only "
                                  f"method Tidings applies, got {request['DefaultAuthenticationMethod']!r}")
    config = dict(current.out.config) if current is not None else {}
    given = {native: request[member] for native, member in MEMBERS["apns"].items() if request.get(member)}
    missing = [member for native, member in MEMBERS["apns"].items() if native not in given and native not in config]
    if missing:
        raise BadRequestException(f"{kind.request}: {', '.join(missing)} required to configure APNs (token-based: "
                                  "the .p8 key's content, its key id, your team id and the app's bundle id)")
    if kind.voip and "topic" in given and not given["topic"].endswith(VOIP_SUFFIX):
        given["topic"] += VOIP_SUFFIX
    config.update(given, environment=kind.environment)
    if kind.voip:
        config["push_type"] = "voip"
    return config, None


SETTINGS: dict[str, Callable[[Kind, dict[str, Any], ConfiguredChannel | None], Settings]] = {
    "smtp": _email, "twilio-sms": _sms, "twilio-voice": _voice, "fcm": _gcm, "apns": _apns}


# ---- operations -------------------------------------------------------------------------------------------


def _found(ctx: Context, kind: Kind) -> ConfiguredChannel:
    configured = configured_channels(ctx.db, ctx.app_state.plugins, _workspace(ctx)).get(kind.channel)
    other = kind_of(configured) if configured is not None else None
    if configured is None or other != kind:
        raise NotFoundException(f"the application has no {kind.platform} channel"
                                + (f" (its {kind.channel} channel is its {other.platform} channel)" if other else ""))
    return configured


def _check_served(kind: Kind, channels: dict[str, ConfiguredChannel]) -> None:
    """One channel serves a channel type in a workspace: a type taken by another channel is refused, naming it."""
    current = channels.get(kind.channel)
    if current is not None and kind_of(current) != kind:
        other = kind_of(current)
        assert other is not None
        raise BadRequestException(f"{kind.request}: this application's {kind.channel} channel is its "
                                  f"{other.platform} channel, and Tidings keeps one APNs channel per workspace: "
                                  f"Delete{other.op}Channel first")
    for name, channel in channels.items():
        if name != kind.channel and kind.channel_type in channel.out.channel_types:
            other = kind_of(channel)
            how = f"Delete{other.op}Channel" if other else f"DELETE /v1/channels/{name}"
            raise BadRequestException(f"{kind.request}: {kind.channel_type} is served by this workspace's channel "
                                      f"{name!r}, and one channel serves a channel type: {how} first")


def _bad_setting(kind: Kind, exc: InvalidInput | Conflict) -> BadRequestException:
    setting = (exc.field or "").removeprefix("config.")
    member = MEMBERS.get(kind.channel, {}).get(setting)
    where = kind.member(member) if member else kind.request
    return BadRequestException(f"{where}: {exc.message}")


async def _update(kind: Kind, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    workspace, request = _workspace(ctx), params[kind.request]
    if request.get("Enabled") is False:
        raise BadRequestException(f"{kind.member('Enabled')}: a Tidings channel is enabled while it is configured; "
                                  f"Delete{kind.op}Channel removes it")
    plugins = ctx.app_state.plugins

    def saved() -> dict[str, Any]:
        channels = configured_channels(ctx.db, plugins, workspace)
        _check_served(kind, channels)
        current = channels.get(kind.channel)
        config, rate = SETTINGS[kind.channel](kind, request, current)
        body = ChannelPut(
            config=config, rate_limit=current.out.rate_limit if current is not None else rate,
            channel_types=[ChannelType(t) for t in current.out.channel_types] if current is not None else None,
            feedback_secret=current.out.feedback_secret if current is not None else None)
        try:
            put_channel(ctx.db, plugins, workspace, kind.channel, body)
        except NotFound as exc:  # the plugin is not loaded here
            raise BadRequestException(f"{kind.request}: {exc.message}") from None
        except (InvalidInput, Conflict) as exc:
            raise _bad_setting(kind, exc) from None
        return _response(ctx, kind, _found(ctx, kind))
    return {kind.response: await asyncio.to_thread(saved)}


async def _get(kind: Kind, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {kind.response: await asyncio.to_thread(lambda: _response(ctx, kind, _found(ctx, kind)))}


async def _delete(kind: Kind, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Removes the native channel; the type's messages then go to the environment's channel or the outbox
    (docs/channels.md). Answers with the channel as it was."""
    def deleted() -> dict[str, Any]:
        answer = _response(ctx, kind, _found(ctx, kind))
        try:
            delete_channel(ctx.db, _workspace(ctx), kind.channel)
        except NotFound:  # deleted meanwhile
            raise NotFoundException(f"the application has no {kind.platform} channel") from None
        return answer
    return {kind.response: await asyncio.to_thread(deleted)}


for _kind in KINDS:
    operation(f"Update{_kind.op}Channel")(functools.partial(_update, _kind))
    operation(f"Get{_kind.op}Channel")(functools.partial(_get, _kind))
    operation(f"Delete{_kind.op}Channel")(functools.partial(_delete, _kind))


@operation("GetChannels")
async def get_channels(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """The application's Pinpoint channels, by Platform: the workspace's configured smtp, twilio-sms,
    twilio-voice, fcm and apns channels (other native channels, webhook and outbox, have no Pinpoint kind)."""
    def listed() -> dict[str, Any]:
        channels = {}
        for configured in configured_channels(ctx.db, ctx.app_state.plugins, _workspace(ctx)).values():
            kind = kind_of(configured)
            if kind is not None:
                channels[kind.platform] = _channel(ctx, kind, configured)
        return {"Channels": channels}
    return {"ChannelsResponse": await asyncio.to_thread(listed)}
