"""What event streams emit: one JSON object per event, in Tidings' shape or in Pinpoint's.

Tidings shape: {"id": <stream position>, "event_id", "workspace", "name", "timestamp", "arrival_timestamp",
"user_id", "endpoint_id", "attributes", "metrics"}.

Pinpoint shape (`format: pinpoint`): the envelope of Pinpoint's Kinesis/Firehose event stream
(`event_type`, `event_timestamp`, `arrival_timestamp`, `event_version`, `application`, `client`, `device`,
`session`, `attributes`, `metrics`, plus `facets` for email and `client_context` for journeys), with
Pinpoint's event types: `_email.hardbounce`, `_SMS.SUCCESS`, `_journey.send`... See docs/events.md for
the table.
"""
from __future__ import annotations

import json
from typing import Any

from tidings.engine.platform.clock import ms_to_iso
from tidings.engine.messaging.ledger import parse_name

EMAIL_TYPES = {
    "send": ("_email.send", "received"),
    "delivered": ("_email.delivered", "delivered"),
    "open": ("_email.open", "opened"),
    "click": ("_email.click", None),  # feedback = the clicked URL
    "hard_bounce": ("_email.hardbounce", "bounced"),
    "soft_bounce": ("_email.softbounce", "softbounce"),
    "complaint": ("_email.complaint", "complaint"),
    "rejected": ("_email.rejected", "rejected"),
    "rendering_failure": ("_email.rendering_failure", "rendering_failure"),
    "unsubscribe": ("_email.unsubscribe", "unsubscribed"),
    "failed": ("_email.failed", "failed"),  # no Pinpoint equivalent
}
# Pinpoint's mail_event member for each email type.
EMAIL_FACET = {
    "send": "send", "delivered": "delivery", "open": "open", "click": "click", "hard_bounce": "bounce",
    "soft_bounce": "bounce", "complaint": "complaint", "rejected": "reject", "rendering_failure": "rendering_failure",
    "unsubscribe": "unsubscribe", "failed": "failure",
}
SMS_TYPES = {
    "send": ("_SMS.BUFFERED", "SUCCESSFUL"),
    "buffered": ("_SMS.BUFFERED", "PENDING"),
    "delivered": ("_SMS.SUCCESS", "DELIVERED"),
    "failed": ("_SMS.FAILURE", "FAILED"),
    "hard_bounce": ("_SMS.FAILURE", "INVALID"),
    "soft_bounce": ("_SMS.FAILURE", "UNREACHABLE"),
    "rejected": ("_SMS.FAILURE", "BLOCKED"),
    "rendering_failure": ("_SMS.FAILURE", "FAILED"),
    "unsubscribe": ("_SMS.OPTOUT", "OPTED_OUT"),
}
ACTIVITY_TYPE = {"email": "EMAIL", "sms": "SMS", "voice": "VOICE", "push": "PUSH", "webhook": "CUSTOM", "custom": "CUSTOM"}


def tidings_record(row: Any, workspace: str) -> dict[str, Any]:
    return {
        "id": row.id, "event_id": row.event_id, "workspace": workspace, "name": row.name,
        "timestamp": ms_to_iso(row.ts), "arrival_timestamp": ms_to_iso(row.received_at), "user_id": row.user_id,
        "endpoint_id": row.endpoint_id, "attributes": row.attributes or {}, "metrics": row.metrics or {},
    }


def _journey_attrs(a: dict[str, Any]) -> dict[str, Any]:
    out = {}
    if a.get("journey_id") is not None:
        out["journey_id"] = str(a["journey_id"])
        out["journey_run_id"] = str(a.get("journey_run_id") or a.get("run_id") or "")
        out["journey_activity_id"] = str(a.get("step_id") or "")
    return out


def pinpoint_event_type(name: str, attributes: dict[str, Any]) -> str:
    parsed = parse_name(name)
    if not parsed:
        return name
    channel, type_ = parsed
    journey = attributes.get("journey_id") is not None
    if channel == "email":
        return EMAIL_TYPES[type_][0] if type_ in EMAIL_TYPES else name
    if journey and type_ in ("send", "failed"):
        return "_journey.send"  # Pinpoint reports journey sends of the other channels this way
    if channel == "sms" and type_ in SMS_TYPES:
        return SMS_TYPES[type_][0]
    return name


def pinpoint_record(row: Any, workspace: str) -> dict[str, Any]:
    a = dict(row.attributes or {})
    event_type = pinpoint_event_type(row.name, a)
    parsed = parse_name(row.name)
    rec: dict[str, Any] = {
        "event_type": event_type, "event_timestamp": row.ts, "arrival_timestamp": row.received_at,
        "event_version": "3.1", "application": {"app_id": workspace, "sdk": {}},
        "client": {"client_id": row.endpoint_id or row.user_id}, "device": {"platform": {}}, "session": {},
        "attributes": {}, "metrics": dict(row.metrics or {}), "awsAccountId": "",
    }
    extras = {k: str(v) for k, v in a.items() if isinstance(v, (str, int, float, bool)) and not isinstance(v, bool)}
    if parsed is None:  # a customer event or the runtime's _journey.* / _segment.*: Pinpoint's app-event shape
        rec["attributes"] = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in a.items()}
        if row.name.startswith("_journey."):
            rec["attributes"].update(_journey_attrs(a))
        return rec
    channel, type_ = parsed
    attrs: dict[str, Any] = {**extras, **_journey_attrs(a)}
    if a.get("transactional"):
        attrs["message_type"] = "Transactional"
    if event_type == "_journey.send":
        attrs["journey_send_status"] = "FAILURE" if type_ == "failed" else "SUCCESS"
        attrs["journey_activity_type"] = ACTIVITY_TYPE[channel]
        rec["client_context"] = {"custom": {"endpoint": json.dumps({
            "ChannelType": channel.upper(), "Address": row.address, "EndpointStatus": "ACTIVE",
            "OptOut": "OPT_OUT" if row.opt_out else "NONE", "User": {"UserId": row.user_id}})}}
    elif channel == "email":
        feedback = EMAIL_TYPES.get(type_, (None, type_))[1]
        attrs["feedback"] = a.get("link", "") if type_ == "click" else feedback
        rec["facets"] = {"email_channel": {"mail_event": _mail_event(row, a, type_)}}
    elif channel == "sms":
        _add_sms_attributes(attrs, row, a, type_)
    rec["attributes"] = attrs
    return rec


def _mail_event(row: Any, a: dict[str, Any], type_: str) -> dict[str, Any]:
    """Pinpoint's `facets.email_channel.mail_event` of an email event: the mail and the event's detail."""
    mail = {"message_id": a.get("provider_message_id") or a.get("message_id"),
            "message_send_timestamp": a.get("sent_at", row.ts), "destination": [row.address] if row.address else [],
            "headers_truncated": False, "headers": [], "common_headers": {"to": [row.address] if row.address else []}}
    detail: dict[str, Any] = {}
    if type_ in ("open", "click"):
        detail = {"ip_address": a.get("ip_address", ""), "user_agent": a.get("user_agent", "")}
        if type_ == "click":
            detail["link"] = a.get("link", "")
    elif type_ == "delivered":
        detail = {"smtp_response": a.get("provider_status", ""), "recipients": mail["destination"]}
    elif type_ in ("hard_bounce", "soft_bounce"):
        detail = {"bounce_type": "Permanent" if type_ == "hard_bounce" else "Transient",
                  "bounced_recipients": mail["destination"]}
    return {"mail": mail, EMAIL_FACET.get(type_, type_): detail}


def _add_sms_attributes(attrs: dict[str, Any], row: Any, a: dict[str, Any], type_: str) -> None:
    """The attributes Pinpoint's SMS events carry (sender request id, phone number, record status)."""
    attrs.setdefault("sender_request_id", str(a.get("message_id", "")))
    attrs["message_id"] = str(a.get("provider_message_id") or a.get("message_id", ""))
    attrs["destination_phone_number"] = row.address or ""
    attrs["record_status"] = (str(a["provider_status"]).upper() if a.get("provider_status")
                              else SMS_TYPES.get(type_, (None, type_.upper()))[1])
    attrs.setdefault("message_type", "Promotional")


FORMATS = {"tidings": tidings_record, "pinpoint": pinpoint_record}
