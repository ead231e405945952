"""Provider feedback (`POST /feedback/{workspace}/{channel}`) and recipients' responses through tracking URLs.

Feedback: the request goes to the channel plugin's `parse_feedback(headers, body, config, url=...)`,
which checks the provider's signature with the workspace's config of that channel, the one it sends
with (`PUT /v1/channels/{name}`: e.g. Twilio's auth_token). Channels without `parse_feedback` accept
Tidings' generic JSON format, authenticated by the channel's `feedback_secret` (also set by
`PUT /v1/channels/{name}`): either `X-Tidings-Signature` (HMAC-SHA256, as the webhook channel signs)
or `Authorization: Bearer <secret>`.

Each FeedbackEvent finds its message by our id (when the provider echoes it) or by the provider's id
(the `provider_message_id` of the send event), and becomes a message event with the message's identity.
"""
from __future__ import annotations

import hmac
import logging
from datetime import datetime, timezone
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, select

from tidings.engine.channels.contract import ChannelConfigError, FeedbackEvent, FeedbackSignatureError
from tidings.engine.platform.clock import datetime_to_ms
from tidings.engine.platform.db import reading, writing
from tidings.engine.platform.signing import verify_signature
from tidings.engine.platform.errors import Forbidden, InvalidInput, NotFound, Unavailable
from tidings.engine.messaging.ledger import (
    FEEDBACK_TYPES, MessageRef, Occurrence, find_messages, opt_out, record_occurrences,
)
from tidings.engine.channels import secrets as channel_secrets
from tidings.engine.channels.tables import channel_configs
from tidings.engine.workspaces.tables import workspaces

log = logging.getLogger("tidings.feedback")


class GenericFeedback(msgspec.Struct, kw_only=True):
    event_type: str
    message_id: str | None = None
    provider_message_id: str | None = None
    timestamp: datetime | None = None
    address: str | None = None
    permanent: bool | None = None
    details: dict[str, Any] = {}


class GenericBatch(msgspec.Struct):
    events: list[GenericFeedback]


class FeedbackResult(msgspec.Struct):
    received: int
    recorded: int
    duplicates: int
    unmatched: int


def _bearer(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth.startswith("Bearer ") else ""


def _generic(headers: dict[str, str], body: bytes, secret: str | None, channel: str) -> list[FeedbackEvent]:
    if not secret:
        raise Forbidden(f"channel {channel!r} has no feedback secret configured")
    signed = verify_signature(secret, headers.get("x-tidings-signature"), body)
    token = _bearer(headers)
    if not signed and not (token and hmac.compare_digest(token.encode(), secret.encode())):
        raise Forbidden("feedback signature or secret does not match")
    try:
        batch = msgspec.json.decode(body, type=GenericBatch)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"feedback body: {exc}") from None
    out = []
    for i, e in enumerate(batch.events):
        if e.event_type not in FEEDBACK_TYPES:
            raise InvalidInput(f"unknown event_type {e.event_type!r} (one of {', '.join(sorted(FEEDBACK_TYPES))})",
                               field=f"events[{i}].event_type")
        if not (e.message_id or e.provider_message_id):
            raise InvalidInput("an event names its message with message_id or provider_message_id",
                               field=f"events[{i}].message_id")
        ts = e.timestamp or datetime.now(timezone.utc)
        out.append(FeedbackEvent(event_type=e.event_type, timestamp=ts, channel=channel, message_id=e.message_id,
                                 provider_message_id=e.provider_message_id, address=e.address,
                                 permanent=e.permanent, details=e.details))
    return out


def receive(db: Engine, plugins: Any, workspace: str, channel: str, headers: dict[str, str], body: bytes,
            url: str) -> FeedbackResult:
    """Verify and record one provider callback. Raises Forbidden (403) when the signature is wrong."""
    headers = {k.lower(): v for k, v in headers.items()}
    with reading(db) as conn:
        workspace_id = conn.execute(select(workspaces.c.id).where(workspaces.c.name == workspace)).scalar()
        setting = None if workspace_id is None else conn.execute(
            select(channel_configs.c.config, channel_configs.c.feedback_secret).where(
                channel_configs.c.workspace_id == workspace_id, channel_configs.c.name == channel)).first()
    ch = plugins.channels.get(channel)
    if workspace_id is None or ch is None or setting is None:
        raise NotFound("no such feedback endpoint (the channel is not configured in this workspace)")
    parse = getattr(ch, "parse_feedback", None)
    try:
        config = channel_secrets.open_config(channel, setting.config, workspace)
        feedback_secret = channel_secrets.open_value(channel, "feedback_secret", setting.feedback_secret, workspace)
    except channel_secrets.SecretUnreadable as exc:
        # The caller is a provider on a public URL: the operator's key trouble goes to the log, the provider
        # gets a 503 it retries later, and neither key sources nor fingerprints leave the server.
        log.error("feedback for workspace %r: %s", workspace, exc)
        raise Unavailable(f"feedback for channel {channel!r} cannot be verified now; try again later") from None
    if parse is not None:
        try:
            fb = parse(headers, body, config, url=url)
        except FeedbackSignatureError as exc:
            raise Forbidden(str(exc)) from None
        except ChannelConfigError as exc:
            raise InvalidInput(f"settings of channel {channel!r}: {exc}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"feedback body: {exc}") from None
    else:
        fb = _generic(headers, body, feedback_secret, channel)
    with writing(db) as conn:
        stored, dups, unmatched = record_feedback(conn, workspace_id, fb)
    return FeedbackResult(received=len(fb), recorded=stored, duplicates=dups, unmatched=unmatched)


# Feedback after which nothing more goes to the endpoint: the customer unsubscribed, the address does not
# exist (a hard bounce is permanent by definition; soft bounces are not) or the recipient called it spam.
# Mailing on after those is what gets a sender's domain blocked; Braze and SES's suppression list stop too.
SUPPRESSING_TYPES = frozenset({"unsubscribe", "hard_bounce", "complaint"})


def record_feedback(conn: Connection, workspace_id: int, fb: list[FeedbackEvent]) -> tuple[int, int, int]:
    by_id, by_provider = find_messages(conn, workspace_id, message_ids=[e.message_id for e in fb if e.message_id],
                                       provider_ids=[e.provider_message_id for e in fb if e.provider_message_id])
    items: list[tuple[MessageRef, Occurrence]] = []
    unmatched = 0
    suppressed: list[MessageRef] = []
    for e in fb:
        ref = (by_id.get(e.message_id) if e.message_id else None) or (
            by_provider.get(e.provider_message_id) if e.provider_message_id else None)
        type_ = FEEDBACK_TYPES.get(e.event_type)
        if ref is None or type_ is None:
            unmatched += 1
            continue
        details = {f"provider_{k}" if k == "status" else k: v for k, v in (e.details or {}).items()
                   if isinstance(v, (str, int, float, bool))}
        details["feedback_channel"] = e.channel
        if e.provider_message_id:
            details["provider_message_id"] = e.provider_message_id
        if e.permanent is not None:
            details["permanent"] = e.permanent
        if type_ == "click" and "url" in details and "link" not in details:
            details["link"] = details["url"]
        items.append((ref, Occurrence(type=type_, ts=datetime_to_ms(e.timestamp), details=details)))
        if type_ in SUPPRESSING_TYPES:
            suppressed.append(ref)
    stored, dups = record_occurrences(conn, workspace_id, items)
    for ref in suppressed:
        opt_out(conn, ref)
    return stored, dups, unmatched
