"""Example Tidings channel plugin.

Provides the channel ``example-post`` (type CUSTOM): every message is POSTed
as JSON to the ``url`` setting, with the ``api_key`` secret as a bearer token.
"""

from __future__ import annotations

from typing import Any, Mapping

import httpx

from tidings.engine.platform import egress
from tidings.engine.channels import (
    Channel,
    ChannelType,
    ConfigField,
    OutgoingMessage,
    SendResult,
)
from tidings.engine.hookspecs import hookimpl


class ExamplePostChannel(Channel):
    name = "example-post"
    channel_type = ChannelType.CUSTOM
    description = "POST each message as JSON to a URL."
    default_rate_limit = 20.0
    config_fields = (
        ConfigField(name="url", required=True, description="Where to POST messages"),
        ConfigField(name="api_key", secret=True, description="Sent as a bearer token"),
        ConfigField(name="timeout", type="float", default=5.0),
    )

    async def send_batch(
        self, messages: list[OutgoingMessage], config: Mapping[str, Any]
    ) -> list[SendResult]:
        cfg = self.resolve_config(config)  # defaults, types, unknown keys
        headers = {"Authorization": f"Bearer {cfg['api_key']}"} if cfg["api_key"] else {}
        results = []
        # egress.async_client: the server's destination guard checks every connection (the URL is a
        # workspace's setting; docs/channels.md, "Destinations")
        async with egress.async_client(timeout=cfg["timeout"]) as client:  # one connection
            for m in messages:
                try:
                    resp = await client.post(
                        cfg["url"],
                        headers={**headers, "Idempotency-Key": m.idempotency_key or m.message_id},
                        json={"id": m.message_id, "to": m.to, "body": m.body, "payload": m.payload},
                    )
                except egress.DestinationRefused as exc:  # not a public address: never retried
                    results.append(SendResult.failed(m.message_id, str(exc), permanent=True))
                    continue
                except httpx.HTTPError as exc:  # network: retry later
                    results.append(SendResult.failed(m.message_id, str(exc), permanent=False))
                    continue
                if resp.is_success:
                    results.append(SendResult.sent(m.message_id, resp.json().get("id")))
                else:
                    transient = resp.status_code == 429 or resp.status_code >= 500
                    results.append(SendResult.failed(
                        m.message_id, f"HTTP {resp.status_code}", permanent=not transient))
        return results


@hookimpl
def register_channels() -> list[Channel]:
    return [ExamplePostChannel()]
