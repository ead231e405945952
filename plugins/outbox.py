"""Built-in channel ``outbox``: keeps messages in Tidings' own database instead of delivering them.

It serves every channel type, so a workspace with nothing configured still "sends": the messages are
listed by ``GET /v1/outbox?address=`` (development, tests, previews). Since it writes to our database,
the engine hands it a store function with :meth:`OutboxChannel.with_store` before sending
(tidings.engine.messaging.outbox); a bare ``OutboxChannel`` (no store) fails every message permanently
rather than pretending to send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Callable

from tidings.engine.channels import Channel, ChannelType, OutgoingMessage, SendResult
from tidings.engine.hookspecs import hookimpl


class OutboxChannel(Channel):
    name = "outbox"
    channel_type = ChannelType.CUSTOM
    serves_any_type = True  # the engine's fallback for every endpoint channel type
    description = "Stores messages in the database (GET /v1/outbox); nothing leaves the machine."
    default_rate_limit = None
    config_fields = ()

    def __init__(self, store: Callable[[list[dict]], None] | None = None) -> None:
        self.store = store

    def with_store(self, store: Callable[[list[dict]], None]) -> "OutboxChannel":
        return OutboxChannel(store)

    async def send_batch(
        self, messages: list[OutgoingMessage], config: Mapping[str, Any]
    ) -> list[SendResult]:
        self.resolve_config(config)
        if self.store is None:
            return [SendResult.failed(m.message_id, "outbox has no store", permanent=True) for m in messages]
        rows = []
        for m in messages:
            workspace = m.metadata.get("workspace_id")
            if not isinstance(workspace, int):
                continue
            rows.append({"workspace_id": workspace, "message_id": m.message_id, "channel_type": m.channel_type.value,
                         "address": m.to, "content": m.content()})
        await asyncio.to_thread(self.store, rows)
        stored = {r["message_id"] for r in rows}
        return [SendResult.sent(m.message_id, m.message_id) if m.message_id in stored
                else SendResult.failed(m.message_id, "message has no workspace_id in metadata", permanent=True)
                for m in messages]


@hookimpl
def register_channels() -> list[Channel]:
    return [OutboxChannel()]


__all__ = ["OutboxChannel"]
