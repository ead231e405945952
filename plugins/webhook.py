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

Classification: 2xx sent; 408, 425, 429, 5xx and network errors transient;
3xx and other 4xx permanent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx

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
        async with egress.async_client(timeout=cfg["timeout"], follow_redirects=False) as client:

            async def one(msg: OutgoingMessage) -> SendResult:
                async with sem:
                    try:
                        await egress.check_url(msg.to)
                    except egress.DestinationRefused as exc:
                        return SendResult.failed(msg.message_id, str(exc), permanent=True)
                    except OSError as exc:  # the name does not resolve (now)
                        return SendResult.failed(msg.message_id, str(exc), permanent=False)
                    try:
                        body = json.dumps(
                            msg.payload, separators=(",", ":"), ensure_ascii=False
                        ).encode()
                    except (TypeError, ValueError) as exc:
                        return SendResult.failed(
                            msg.message_id, f"payload is not JSON-serialisable: {exc}", permanent=True
                        )
                    headers = {
                        **msg.headers,
                        "Content-Type": "application/json",
                        "X-Tidings-Message-Id": msg.message_id,
                        "Idempotency-Key": msg.idempotency_key or msg.message_id,
                    }
                    if cfg.get("secret"):
                        headers[SIGNATURE_HEADER] = sign(cfg["secret"], body)
                    try:
                        resp = await client.post(msg.to, content=body, headers=headers)
                    except egress.DestinationRefused as exc:  # the name resolved elsewhere at connect time
                        return SendResult.failed(msg.message_id, str(exc), permanent=True)
                    except httpx.HTTPError as exc:
                        return SendResult.failed(
                            msg.message_id, f"{type(exc).__name__}: {exc}", permanent=False
                        )
                code = resp.status_code
                if 200 <= code < 300:
                    return SendResult.sent(msg.message_id, resp.headers.get("x-request-id"))
                transient = code in (408, 425, 429) or code >= 500
                return SendResult.failed(
                    msg.message_id, f"HTTP {code}", permanent=not transient
                )

            return list(await asyncio.gather(*(one(m) for m in messages)))


__all__ = ["WebhookChannel", "sign", "verify_signature", "SIGNATURE_HEADER", "ALLOW_PRIVATE_FIELD"]


@hookimpl
def register_channels() -> list[Channel]:
    return [WebhookChannel()]
