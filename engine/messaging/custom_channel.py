"""Sends to a custom-channel receiver (Pinpoint's CUSTOM activity and campaign custom channel): each endpoint
of the customer's chosen types is one message to the receiver's URL, whose payload is the batch's common
members and the endpoint as Pinpoint's endpoint document (tidings.engine.channels.custom_payload), sent by the
webhook channel in batches."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from tidings.engine.channels import custom_payload

# Pinpoint's endpoint types a custom channel can send to -> the Tidings channel of those endpoints
ENDPOINT_TYPES = {"EMAIL": "EMAIL", "SMS": "SMS", "VOICE": "VOICE", "CUSTOM": "CUSTOM", "PUSH": "PUSH",
                  "GCM": "PUSH", "APNS": "PUSH", "APNS_SANDBOX": "PUSH", "APNS_VOIP": "PUSH",
                  "APNS_VOIP_SANDBOX": "PUSH", "ADM": "PUSH", "BAIDU": "PUSH"}


def native_channels(endpoint_types: list[str]) -> list[str]:
    return sorted({ENDPOINT_TYPES[t] for t in endpoint_types if t in ENDPOINT_TYPES})


# native demographic and location fields -> Pinpoint's (as api/pinpoint/endpoints.py maps them the other way)
DEMOGRAPHIC = {"app_version": "AppVersion", "locale": "Locale", "make": "Make", "model": "Model",
               "model_version": "ModelVersion", "platform": "Platform", "platform_version": "PlatformVersion",
               "timezone": "Timezone"}
LOCATION = {"city": "City", "country": "Country", "latitude": "Latitude", "longitude": "Longitude",
            "postal_code": "PostalCode", "region": "Region"}


class CustomSend(msgspec.Struct, frozen=True, kw_only=True):
    """What a journey step tells messaging about a custom-channel send."""

    url: str
    channels: list[str]  # the native channels of the endpoints to send ([] = every endpoint)
    data: str  # the payload's Data when no template renders it
    id_member: str  # "JourneyId" or "CampaignId"
    id_value: str
    treatment_id: str
    activity_id: str
    scheduled_ms: int


def header(send: CustomSend, application_id: str, data: str) -> dict[str, Any]:
    """The members every request of the batch carries, in Pinpoint's order."""
    at = datetime.fromtimestamp(send.scheduled_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return {"ApplicationId": application_id, send.id_member: send.id_value, "TreatmentId": send.treatment_id,
            "ActivityId": send.activity_id, "ScheduledTime": at.replace("+00:00", "Z"), "Data": data}


def _as_lists(values: dict[str, Any] | None) -> dict[str, list[str]]:
    """Attributes as Pinpoint's map of string lists (a native single value or bool is a one-item list)."""
    def as_list(value: Any) -> list[str]:
        if isinstance(value, list):
            return [str(v) for v in value]
        return ["true" if value is True else "false" if value is False else str(value)]
    return {k: as_list(v) for k, v in (values or {}).items() if v is not None}


def endpoint_document(endpoint: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    """An endpoint (dispatch's endpoint context) and its owner as Pinpoint's endpoint in a custom-channel batch."""
    doc: dict[str, Any] = {
        "ChannelType": endpoint.get("channel"), "Address": endpoint.get("address"), "EndpointStatus": "ACTIVE",
        "OptOut": "NONE",  # opted-out endpoints are not sent
        "Attributes": _as_lists(endpoint.get("attributes")), "Metrics": dict(endpoint.get("metrics") or {}),
        "Demographic": {DEMOGRAPHIC[k]: v for k, v in (endpoint.get("demographic") or {}).items() if k in DEMOGRAPHIC},
        "Location": {LOCATION[k]: v for k, v in (endpoint.get("location") or {}).items() if k in LOCATION},
    }
    if user is not None:
        doc["User"] = {"UserId": user.get("user_id"), "UserAttributes": _as_lists(user.get("attributes"))}
    return doc


def payload(head: dict[str, Any], endpoint: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    return custom_payload.envelope(head, str(endpoint.get("id")), endpoint_document(endpoint, user))


METADATA = {"webhook_format": custom_payload.FORMAT}
