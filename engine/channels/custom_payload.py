"""Pinpoint's custom-channel payload, as the webhook channel (plugins/webhook.py) sends it.

Pinpoint's CUSTOM journey activity and a campaign's custom channel POST batches of endpoints to a receiver:

    {"ApplicationId": "...", "JourneyId": "..." | "CampaignId": "...", "TreatmentId": "0", "ActivityId": "...",
     "ScheduledTime": "2026-12-04T19:00:00.000Z", "Data": "<CustomMessage.Data>", "Message": {},
     "Endpoints": {"<endpoint id>": {"ChannelType": "EMAIL", "Address": "...", "Attributes": {...},
                                     "User": {"UserId": "...", "UserAttributes": {...}}, ...}, ...}}

Each endpoint is one Tidings message (its own row, idempotency key, retries and events); the messaging side gives
each message the batch's common members (`header`) and its endpoint (`endpoint_id`, `endpoint`) as its payload,
with ``metadata["webhook_format"] == FORMAT``. The webhook channel groups the messages of one send_batch call
that share their URL and header into bodies of at most MAX_ENDPOINTS endpoints (Pinpoint's batch size).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

FORMAT = "pinpoint-custom-channel"
MAX_ENDPOINTS = 50  # endpoints per request, as Pinpoint batched them


def is_custom(metadata: dict[str, Any]) -> bool:
    return metadata.get("webhook_format") == FORMAT


def envelope(header: dict[str, Any], endpoint_id: str, endpoint: dict[str, Any]) -> dict[str, Any]:
    """One message's payload: the batch's common members and its endpoint."""
    return {"header": header, "endpoint_id": endpoint_id, "endpoint": endpoint}


def batches(items: Sequence[tuple[str, Any]]) -> list[list[int]]:
    """Indexes of `items` ((url, envelope) per message) grouped into requests: the same url and header, at most
    MAX_ENDPOINTS endpoints (an endpoint id already in a group starts another, so none is sent twice in one)."""
    groups: dict[str, list[list[int]]] = {}
    for i, (url, env) in enumerate(items):
        key = url + "\n" + json.dumps(env["header"], sort_keys=True, separators=(",", ":"))
        chunks = groups.setdefault(key, [[]])
        last = chunks[-1]
        if len(last) >= MAX_ENDPOINTS or any(items[j][1]["endpoint_id"] == env["endpoint_id"] for j in last):
            chunks.append(last := [])
        last.append(i)
    return [chunk for chunks in groups.values() for chunk in chunks]


def body(envelopes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The request body of one batch (every envelope has the same header)."""
    return {**envelopes[0]["header"], "Message": {},
            "Endpoints": {e["endpoint_id"]: e["endpoint"] for e in envelopes}}


def batch_key(message_ids: Sequence[str]) -> str:
    """The Idempotency-Key of one batch: the same messages retried carry the same key."""
    return "batch-" + hashlib.sha256("\n".join(sorted(message_ids)).encode()).hexdigest()[:40]
