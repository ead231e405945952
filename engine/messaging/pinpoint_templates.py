"""Pinpoint message templates <-> native templates (tidings.engine.messaging.template_store), shared by the
Pinpoint-compatible API (api/pinpoint/templates.py) and `tidings pinpoint convert`. Pinpoint's parts map onto
the native ones (EMAIL Subject/HtmlPart/TextPart -> subject/html/text, SMS Body -> body, VOICE Body -> text,
PUSH Default Title/Body -> title/body and Action/Url -> data.action/url), DefaultSubstitutions onto the
template's defaults; a member Tidings would not apply is refused by name (InvalidInput, which the API answers
as BadRequestException with the same message)."""
from __future__ import annotations

import json
from typing import Any

import msgspec

from tidings.engine.messaging.template_store import TemplateBody
from tidings.engine.platform.errors import InvalidInput


class Kind(msgspec.Struct, frozen=True):
    type: str  # Pinpoint's TemplateType
    op: str  # the operations' infix (CreateEmailTemplate)
    request: str  # the request member (EmailTemplateRequest)
    response: str  # the Get output member
    channel: str  # the native channel
    parts: dict[str, str]  # native part -> Pinpoint member (error messages)


KINDS = {k.type: k for k in (
    Kind(type="EMAIL", op="Email", request="EmailTemplateRequest", response="EmailTemplateResponse", channel="EMAIL",
         parts={"subject": "Subject", "html": "HtmlPart", "text": "TextPart"}),
    Kind(type="SMS", op="Sms", request="SMSTemplateRequest", response="SMSTemplateResponse", channel="SMS",
         parts={"body": "Body"}),
    Kind(type="VOICE", op="Voice", request="VoiceTemplateRequest", response="VoiceTemplateResponse", channel="VOICE",
         parts={"text": "Body"}),
    Kind(type="PUSH", op="Push", request="PushNotificationTemplateRequest", response="PushNotificationTemplateResponse",
         channel="PUSH", parts={"title": "Default.Title", "body": "Default.Body", "data.action": "Default.Action",
                                "data.url": "Default.Url", "data": "Default"}),
)}
BY_CHANNEL = {k.channel: k for k in KINDS.values()}
PUSH_PLATFORMS = ("GCM", "APNS", "ADM", "Baidu")
PUSH_KEPT = {"Title": "title", "Body": "body", "Action": "action", "Url": "url"}


def _defaults(kind: Kind, request: dict[str, Any]) -> dict[str, Any]:
    raw = request.get("DefaultSubstitutions")
    if raw is None or raw == "":
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidInput(f"{kind.request}.DefaultSubstitutions: not JSON (a JSON object as a string, "
                                  '"{\\"User.UserAttributes.FirstName\\": \\"there\\"}")') from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{kind.request}.DefaultSubstitutions: must be a JSON object mapping each variable "
                                  "to its default")
    return value


def _push_parts(kind: Kind, request: dict[str, Any]) -> dict[str, Any]:
    """Tidings push templates have one content for every platform: Default, or platform blocks that agree
    with it (or with each other when there is no Default)."""
    given = {name: {k: v for k, v in (request.get(name) or {}).items() if v is not None}
             for name in ("Default", *PUSH_PLATFORMS) if request.get(name)}
    for name, block in given.items():
        for member in block:
            if member not in PUSH_KEPT:
                raise InvalidInput(f"{kind.request}.{name}.{member}: not applied by Tidings push templates "
                                          f"(they keep {', '.join(PUSH_KEPT)})")
    blocks = list(given.values())
    content = given.get("Default") or (blocks[0] if blocks else {})
    for name, block in given.items():
        if block != content:
            raise InvalidInput(f"{kind.request}.{name}: differs from "
                                      f"{'Default' if 'Default' in given else next(iter(given))}; a Tidings push "
                                      "template has one content for every platform")
    parts: dict[str, Any] = {native: content[member] for member, native in PUSH_KEPT.items()
                             if member in ("Title", "Body") and content.get(member)}
    data = {native: content[member] for member, native in PUSH_KEPT.items()
            if member in ("Action", "Url") and content.get(member)}
    if data:
        parts["data"] = data
    return parts


def to_body(kind: Kind, request: dict[str, Any]) -> TemplateBody:
    """The native template of a Pinpoint template request; what Tidings would not apply is refused by name."""
    if request.get("RecommenderId"):
        raise InvalidInput(f"{kind.request}.RecommenderId: Tidings has no recommender models "
                                  "(Amazon Personalize); send the template without RecommenderId")
    if request.get("Headers"):
        raise InvalidInput(f"{kind.request}.Headers: Tidings email templates set no custom headers")
    for member in ("LanguageCode", "VoiceId"):
        if request.get(member):
            raise InvalidInput(f"{kind.request}.{member}: not applied by Tidings voice channels (they read "
                                      "the text in the provider's default voice)")
    if kind.type == "EMAIL":
        parts = {"subject": request.get("Subject"), "html": request.get("HtmlPart"), "text": request.get("TextPart")}
    elif kind.type == "SMS":
        parts = {"body": request.get("Body")}
    elif kind.type == "VOICE":
        parts = {"text": request.get("Body")}
    else:
        parts = _push_parts(kind, request)
    present = {k: v for k, v in parts.items() if v is not None}
    return TemplateBody(channel=kind.channel, defaults=_defaults(kind, request), **present)  # type: ignore[arg-type]


def pinpoint_content(kind: Kind, body: TemplateBody) -> dict[str, Any]:
    if kind.type == "EMAIL":
        out = {"Subject": body.subject, "HtmlPart": body.html, "TextPart": body.text}
    elif kind.type == "SMS":
        out = {"Body": body.body}
    elif kind.type == "VOICE":
        out = {"Body": body.text}
    else:
        default = {"Title": body.title, "Body": body.body, "Action": body.data.get("action"),
                   "Url": body.data.get("url")}
        return {"Default": {k: v for k, v in default.items() if v is not None}}
    return {k: v for k, v in out.items() if v is not None}
