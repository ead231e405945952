"""SendMessages and SendUsersMessages through the native transactional send path (tidings.engine.messaging.transactional):
the same channels, message rows and events as POST /v1/messages (so GET /v1/messages/{id} shows them), answered
with Pinpoint's per-address, per-endpoint or per-user results.

The content comes from MessageConfiguration (EmailMessage.SimpleEmail, SMSMessage, VoiceMessage, the push
messages, DefaultMessage) or from TemplateConfiguration (a native template of that name); templates render
Pinpoint's variables (`{{User.UserAttributes.X}}`, `{{Attributes.X}}`, `{{Address}}`, docs/templates.md).
Substitutions (message, address or endpoint level) are the send's `data`, a one-value list as its value.
A template's active version is sent; TemplateConfiguration's Version may only name that one.
"""
from __future__ import annotations

import asyncio
from typing import Any

from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException
from tidings.engine.customers.endpoints import get_endpoints
from tidings.engine.customers.users import get_user
from tidings.engine.messaging import transactional
from tidings.engine.messaging.template_store import PartsBody, get_template_version
from tidings.engine.messaging.transactional import MessageRequest, Recipient
from tidings.engine.platform.errors import NotFound

MAX_RECIPIENTS = 100  # Pinpoint's bound on the addresses, endpoints or users of one request
PUSH_TYPES = {"GCM", "APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX", "ADM", "BAIDU", "PUSH"}
PUSH_MESSAGES = ("GCMMessage", "APNSMessage", "ADMMessage", "BaiduMessage", "DefaultPushNotificationMessage")
TEMPLATES = {"EMAIL": "EmailTemplate", "SMS": "SMSTemplate", "VOICE": "VoiceTemplate", "PUSH": "PushTemplate"}
# Native outcome -> Pinpoint's DeliveryStatus and StatusCode.
STATUS = {"sent": ("SUCCESSFUL", 200), "retrying": ("TEMPORARY_FAILURE", 503), "failed": ("PERMANENT_FAILURE", 400),
          "render_failed": ("PERMANENT_FAILURE", 400), "opted_out": ("OPT_OUT", 400),
          "no_endpoint": ("PERMANENT_FAILURE", 404), "duplicate": ("DUPLICATE", 409)}


def _channel_of(channel_type: str) -> str:
    if channel_type in PUSH_TYPES:
        return "PUSH"
    if channel_type in ("EMAIL", "SMS", "VOICE", "CUSTOM"):
        return channel_type
    raise BadRequestException(f"ChannelType: Tidings cannot send {channel_type} messages")


def _data(substitutions: dict[str, list[str]] | None) -> dict[str, Any]:
    return {k: (v[0] if len(v) == 1 else v) for k, v in (substitutions or {}).items()}


def _content(config: dict[str, Any], channel: str) -> tuple[PartsBody | None, dict[str, Any]]:
    """The inline parts and message-level substitutions MessageConfiguration gives for `channel`."""
    default = config.get("DefaultMessage") or {}
    if channel == "EMAIL":
        email = config.get("EmailMessage") or {}
        if email.get("RawEmail"):
            raise BadRequestException("MessageConfiguration.EmailMessage.RawEmail: raw MIME messages are not sent "
                                      "by Tidings; use SimpleEmail or a template")
        simple = email.get("SimpleEmail") or {}
        parts = {"subject": (simple.get("Subject") or {}).get("Data"), "html": (simple.get("HtmlPart") or {}).get("Data"),
                 "text": (simple.get("TextPart") or {}).get("Data") or email.get("Body") or default.get("Body")}
        subs = email.get("Substitutions") or default.get("Substitutions")
    elif channel in ("SMS", "VOICE"):
        message = config.get("SMSMessage" if channel == "SMS" else "VoiceMessage") or {}
        body = message.get("Body") or default.get("Body")
        parts = {"body": body} if channel == "SMS" else {"text": body}
        subs = message.get("Substitutions") or default.get("Substitutions")
    elif channel == "PUSH":
        push: dict[str, Any] = next((config[name] for name in PUSH_MESSAGES if config.get(name)), {})
        parts = {"title": push.get("Title"), "body": push.get("Body") or default.get("Body"),
                 "data": push.get("Data") or {}}
        subs = push.get("Substitutions") or default.get("Substitutions")
    else:
        parts = {"body": default.get("Body")}
        subs = default.get("Substitutions")
    present = {k: v for k, v in parts.items() if v}
    return (PartsBody(**present) if present else None), _data(subs)


def _request(config: dict[str, Any], templates: dict[str, Any], channel: str, recipients: list[Recipient],
             override: dict[str, Any] | None = None) -> MessageRequest:
    template = (templates.get(TEMPLATES.get(channel, "")) or {})
    content, data = _content(config, channel)
    if override and (override.get("BodyOverride") or override.get("TitleOverride")):
        fields = {"body": override.get("BodyOverride"), "title": override.get("TitleOverride")}
        if channel == "EMAIL":
            fields = {"text": override.get("BodyOverride"), "subject": override.get("TitleOverride")}
        elif channel == "VOICE":
            fields = {"text": override.get("BodyOverride")}
        base = {f: getattr(content, f) for f in content.__struct_fields__ if getattr(content, f)} if content else {}
        content = PartsBody(**{**base, **{k: v for k, v in fields.items() if v}})
        template = {}
    if template.get("Name"):
        return MessageRequest(channel=channel, recipients=recipients,  # type: ignore[arg-type]  # checked above
                              template_id=template["Name"], data=data)
    if content is None:
        raise BadRequestException(f"MessageConfiguration: no content for the {channel} channel (give its message "
                                  f"or TemplateConfiguration.{TEMPLATES.get(channel, 'EmailTemplate')})")
    return MessageRequest(channel=channel, recipients=recipients,  # type: ignore[arg-type]  # checked above
                          content=content, data=data)


def _check_versions(ctx: Context, templates: dict[str, Any]) -> dict[str, Any]:
    """TemplateConfiguration with each `Version` checked: Tidings sends a template's active version, so a
    Version is accepted when it is that one (and dropped), refused naming it otherwise."""
    checked = dict(templates)
    for member, template in templates.items():
        if not (template or {}).get("Version"):
            continue
        field = f"TemplateConfiguration.{member}.Version"
        if not template.get("Name"):
            raise BadRequestException(f"{field}: a Version needs the template's Name")
        try:
            active = get_template_version(ctx.db, ctx.workspace, template["Name"]).active
        except NotFound:
            raise BadRequestException(f"TemplateConfiguration.{member}.Name: no template {template['Name']!r}") from None
        if template["Version"] != str(active):
            raise BadRequestException(f"{field}: version {template['Version']!r} is not the active version ({active}) of "
                                      f"{template['Name']!r}; Tidings sends a template's active version "
                                      "(UpdateTemplateActiveVersion chooses it)")
        checked[member] = {k: v for k, v in template.items() if k != "Version"}
    return checked


def _result(outcome: Any, address: str | None = None) -> dict[str, Any]:
    status, code = STATUS.get(outcome.status, ("UNKNOWN_FAILURE", 500))
    result: dict[str, Any] = {"DeliveryStatus": status, "StatusCode": code}
    if outcome.message_id:
        result["MessageId"] = outcome.message_id
    if outcome.error:
        result["StatusMessage"] = outcome.error
    if address is not None:
        result["Address"] = address
    return result


def _failure(message: str, code: int = 404) -> dict[str, Any]:
    return {"DeliveryStatus": "PERMANENT_FAILURE", "StatusCode": code, "StatusMessage": message}


def _recipient(config: dict[str, Any], context: dict[str, str], **who: str) -> Recipient:
    data = _data(config.get("Substitutions"))
    if config.get("Context") or context:
        data["Context"] = {**context, **(config.get("Context") or {})}
    return Recipient(data=data, **who)


async def _send(ctx: Context, requests: list[MessageRequest]) -> list[Any]:
    if not requests:
        return []
    answers = await transactional.send(ctx.db, ctx.app_state.plugins, ctx.workspace, requests, None, batch=True)
    return [r for answer in answers for r in answer.results]


def _grouped(config: dict[str, Any], templates: dict[str, Any],
             recipients: list[tuple[str, str, str, dict[str, Any], Recipient]]) -> tuple[list[MessageRequest], list]:
    """One native request per channel for the recipients without overrides (their content is checked and
    compiled once), one per recipient with a BodyOverride or TitleOverride. Returns the requests and the
    (kind, key) of each of their recipients, in order."""
    groups: dict[tuple, list] = {}
    for kind, key, channel, how, recipient in recipients:
        override = (how.get("BodyOverride"), how.get("TitleOverride"))
        group = (channel, None) if override == (None, None) else (channel, kind, key)
        groups.setdefault(group, []).append((kind, key, how, recipient))
    requests, order = [], []
    for (channel, *alone), members in groups.items():
        how = members[0][2] if alone else None
        requests.append(_request(config, templates, channel, [m[3] for m in members], how))
        order += [(kind, key) for kind, key, _, _ in members]
    return requests, order


@operation("SendMessages")
async def send_messages(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    body = params["MessageRequest"]
    config = body["MessageConfiguration"]
    templates = await asyncio.to_thread(_check_versions, ctx, body.get("TemplateConfiguration") or {})
    context = body.get("Context") or {}
    addresses, endpoints = body.get("Addresses") or {}, body.get("Endpoints") or {}
    if len(addresses) + len(endpoints) > MAX_RECIPIENTS:
        raise BadRequestException(f"MessageRequest: at most {MAX_RECIPIENTS} addresses and endpoints per request")
    recipients = []
    for address, how in addresses.items():
        if not how.get("ChannelType"):
            raise BadRequestException(f"Addresses.{address}.ChannelType: required to send to an address")
        recipients.append(("address", address, _channel_of(how["ChannelType"]), how,
                           _recipient(how, context, address=address)))
    known = await asyncio.to_thread(get_endpoints, ctx.db, ctx.workspace, list(endpoints))
    endpoint_results: dict[str, Any] = {}
    for endpoint_id, how in endpoints.items():
        ep = known.get(endpoint_id)
        if ep is None:
            endpoint_results[endpoint_id] = _failure(f"no endpoint {endpoint_id!r}")
            continue
        recipients.append(("endpoint", endpoint_id, ep.channel, how, _recipient(how, context, endpoint_id=endpoint_id)))
    requests, order = _grouped(config, templates, recipients)
    results: dict[str, Any] = {}
    for (kind, key), outcome in zip(order, await _send(ctx, requests)):
        if kind == "address":
            results[key] = _result(outcome)
        else:
            endpoint_results[key] = _result(outcome, known[key].address)
    response: dict[str, Any] = {"ApplicationId": ctx.workspace.name, "RequestId": ctx.request_id}
    if addresses:
        response["Result"] = results
    if endpoints:
        response["EndpointResult"] = endpoint_results
    return {"MessageResponse": response}


def _channels(config: dict[str, Any], templates: dict[str, Any]) -> list[str]:
    """The channels a SendUsersMessages request has content for: each is sent to the users' endpoints on it."""
    found = [c for c, name in (("EMAIL", "EmailMessage"), ("SMS", "SMSMessage"), ("VOICE", "VoiceMessage"))
             if config.get(name)]
    if any(config.get(name) for name in PUSH_MESSAGES):
        found.append("PUSH")
    found += [c for c, name in TEMPLATES.items() if templates.get(name) and c not in found]
    if not found:
        raise BadRequestException("MessageConfiguration: no message for any channel")
    return found


@operation("SendUsersMessages")
async def send_users_messages(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    body = params["SendUsersMessageRequest"]
    config = body["MessageConfiguration"]
    templates = await asyncio.to_thread(_check_versions, ctx, body.get("TemplateConfiguration") or {})
    context, people = body.get("Context") or {}, body["Users"]
    if len(people) > MAX_RECIPIENTS:
        raise BadRequestException(f"SendUsersMessageRequest.Users: at most {MAX_RECIPIENTS} users per request")
    channels = _channels(config, templates)

    def existing() -> set[str]:
        found = set()
        for user_id in people:
            try:
                get_user(ctx.db, ctx.workspace, user_id)
                found.add(user_id)
            except NotFound:
                pass
        return found

    known = await asyncio.to_thread(existing)
    requests, order = _grouped(config, templates, [
        ("user", user_id, channel, how, _recipient(how, context, user_id=user_id))
        for channel in channels for user_id, how in people.items() if user_id in known])
    outcomes = await _send(ctx, requests)
    addresses = await asyncio.to_thread(get_endpoints, ctx.db, ctx.workspace,
                                        [e for o in outcomes for e in o.endpoint_ids])
    results: dict[str, dict[str, Any]] = {u: {} for u in people}
    for (_, user_id), outcome in zip(order, outcomes):
        for i, endpoint_id in enumerate(outcome.endpoint_ids):
            one = outcome.message_ids[i] if i < len(outcome.message_ids) else None
            item = _result(outcome, addresses[endpoint_id].address if endpoint_id in addresses else None)
            if one:
                item["MessageId"] = one
            results[user_id][endpoint_id] = item
    return {"SendUsersMessageResponse": {"ApplicationId": ctx.workspace.name, "RequestId": ctx.request_id,
                                         "Result": results}}
