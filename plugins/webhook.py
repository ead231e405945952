"""Built-in channel ``webhook``: POST a JSON payload to the endpoint's URL.

The endpoint address is the URL. The request body is the message ``payload``
serialised as compact JSON (UTF-8). Headers:

* ``Content-Type: application/json``
* ``X-Tidings-Message-Id: <our message id>``
* ``Idempotency-Key: <idempotency key or message id>`` (receivers should
  de-duplicate on it: a transient failure is retried)
* ``X-Tidings-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
  when a ``secret`` is configured; check it with :func:`verify_signature`.

Security: every request goes through the destination guard (:mod:`tidings.engine.platform.egress`): the host is
resolved when the connection is made, and the send is refused (permanent failure) when *any* address is
loopback, private, link-local, multicast or otherwise non-public, unless the operator allowed it with
``TIDINGS_ALLOW_PRIVATE_DESTINATIONS``. The socket is connected to the checked address, so a DNS answer
cannot change between the check and the connection. Redirects are not followed. An error answer is
reported by its status code only: the receiver's body is not echoed back to the workspace.

Pinpoint's custom channel: messages whose ``metadata["webhook_format"]`` is ``pinpoint-custom-channel``
(a journey's ``custom_channel`` step, Pinpoint's CUSTOM activity and a campaign's CustomDeliveryConfiguration)
carry one endpoint each; those of the same URL and batch go out as one request in Pinpoint's custom-channel
payload (:mod:`tidings.engine.channels.custom_payload`), at most 50 endpoints each, signed the same way. The
request's result is each of its messages' result; ``X-Tidings-Message-Id`` lists the message ids and
``Idempotency-Key`` is the same for the same messages retried.

Classification: 2xx sent; 408, 425, 429, 5xx and network errors transient;
3xx and other 4xx permanent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from tidings.engine.channels import custom_payload
from tidings.engine.platform import egress
from tidings.engine.platform.signing import SIGNATURE_HEADER, sign, verify_signature
from tidings.engine.channels import Channel, ChannelType, ConfigField, OutgoingMessage, SendResult
from tidings.engine.hookspecs import hookimpl

ALLOW_PRIVATE_FIELD = ConfigField(
    name="allow_private_addresses", type="bool", default=False,
    description="Ignored (kept so stored settings still load): private destinations are the operator's "
                "TIDINGS_ALLOW_PRIVATE_DESTINATIONS, never a workspace's")


class WebhookChannel(Channel):
    name = "webhook"
    channel_type = ChannelType.WEBHOOK
    description = "POST the message payload as signed JSON to the endpoint's URL."
    default_rate_limit = 50.0
    config_fields = (
        ConfigField(name="secret", secret=True, description="HMAC key for X-Tidings-Signature"),
        ConfigField(name="timeout", type="float", default=10.0, description="Seconds per request"),
        ALLOW_PRIVATE_FIELD,
        ConfigField(name="concurrency", type="int", default=8),
    )

    async def send_batch(
        self, messages: list[OutgoingMessage], config: Mapping[str, Any]
    ) -> list[SendResult]:
        cfg = self.resolve_config(config)
        sem = asyncio.Semaphore(max(1, cfg["concurrency"]))
        results: list[SendResult | None] = [None] * len(messages)
        custom = [i for i, m in enumerate(messages) if custom_payload.is_custom(m.metadata)]
        single = [i for i, m in enumerate(messages) if not custom_payload.is_custom(m.metadata)]
        async with egress.async_client(timeout=cfg["timeout"], follow_redirects=False) as client:

            async def one(indexes: list[int]) -> None:
                """POST one request: one message, or one custom-channel batch of them (one result for all)."""
                group = [messages[i] for i in indexes]
                async with sem:
                    outcome = await self._post(client, cfg, group)
                for i, m in zip(indexes, group):
                    results[i] = SendResult(**{**msgspec.structs.asdict(outcome), "message_id": m.message_id})

            groups = [[i] for i in single] + [
                [custom[j] for j in chunk]
                for chunk in custom_payload.batches([(messages[i].to, messages[i].payload) for i in custom])]
            await asyncio.gather(*(one(g) for g in groups))
        return [r for r in results if r is not None]

    async def _post(self, client: httpx.AsyncClient, cfg: dict[str, Any], group: list[OutgoingMessage]) -> SendResult:
        first = group[0]
        try:
            await egress.check_url(first.to)
        except egress.DestinationRefused as exc:
            return SendResult.failed(first.message_id, str(exc), permanent=True)
        except OSError as exc:  # the name does not resolve (now)
            return SendResult.failed(first.message_id, str(exc), permanent=False)
        batch = custom_payload.is_custom(first.metadata)
        try:
            payload = custom_payload.body([m.payload for m in group]) if batch else first.payload
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError, KeyError) as exc:
            return SendResult.failed(first.message_id, f"payload is not JSON-serialisable: {exc}", permanent=True)
        ids = [m.message_id for m in group]
        headers = {
            **first.headers,
            "Content-Type": "application/json",
            "X-Tidings-Message-Id": ",".join(ids),
            "Idempotency-Key": custom_payload.batch_key(ids) if batch else first.idempotency_key or first.message_id,
        }
        if cfg.get("secret"):
            headers[SIGNATURE_HEADER] = sign(cfg["secret"], body)
        try:
            resp = await client.post(first.to, content=body, headers=headers)
        except egress.DestinationRefused as exc:  # the name resolved elsewhere at connect time
            return SendResult.failed(first.message_id, str(exc), permanent=True)
        except httpx.HTTPError as exc:
            return SendResult.failed(first.message_id, f"{type(exc).__name__}: {exc}", permanent=False)
        code = resp.status_code
        if 200 <= code < 300:
            return SendResult.sent(first.message_id, resp.headers.get("x-request-id"))
        transient = code in (408, 425, 429) or code >= 500
        return SendResult.failed(first.message_id, f"HTTP {code}", permanent=not transient)


__all__ = ["WebhookChannel", "sign", "verify_signature", "SIGNATURE_HEADER", "ALLOW_PRIVATE_FIELD"]


@hookimpl
def register_channels() -> list[Channel]:
    return [WebhookChannel()]
