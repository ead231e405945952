"""Built-in channel ``outbox``: keeps messages in Tidings' own database instead of delivering them.

It serves every channel type, so a workspace with nothing configured still "sends": the messages are
listed by ``GET /v1/outbox?address=`` (development, tests, previews). Since it writes to our database,
the engine hands it the database with :meth:`OutboxChannel.with_database` before sending; a bare
``OutboxChannel`` (no database) fails every message permanently rather than pretending to send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import msgspec

from tidings.engine.channels import Channel, ChannelType, OutgoingMessage, SendResult
from tidings.engine.hookspecs import hookimpl

_CONTENT = ("subject", "html", "text", "body", "title", "data", "payload", "headers", "unsubscribe_url")


class OutboxChannel(Channel):
    name = "outbox"
    channel_type = ChannelType.CUSTOM
    serves_any_type = True  # the engine's fallback for every endpoint channel type
    description = "Stores messages in the database (GET /v1/outbox); nothing leaves the machine."
    default_rate_limit = None
    config_fields = ()

    def __init__(self, db: Any = None) -> None:
        self.db = db

    def with_database(self, db: Any) -> "OutboxChannel":
        return OutboxChannel(db)

    async def send_batch(
        self, messages: list[OutgoingMessage], config: Mapping[str, Any]
    ) -> list[SendResult]:
        self.resolve_config(config)
        if self.db is None:
            return [SendResult.failed(m.message_id, "outbox has no database", permanent=True) for m in messages]
        rows = []
        for m in messages:
            ws = m.metadata.get("workspace_id")
            if not isinstance(ws, int):
                continue
            content = {k: v for k in _CONTENT if (v := msgspec.to_builtins(getattr(m, k))) not in (None, {}, "")}
            rows.append({"workspace_id": ws, "message_id": m.message_id, "channel_type": m.channel_type.value,
                         "address": m.to, "content": content})
        await asyncio.to_thread(_store, self.db, rows)
        stored = {r["message_id"] for r in rows}
        return [SendResult.sent(m.message_id, m.message_id) if m.message_id in stored
                else SendResult.failed(m.message_id, "message has no workspace_id in metadata", permanent=True)
                for m in messages]


def _store(db: Any, rows: list[dict]) -> None:
    from tidings.engine.platform.clock import now_ms
    from tidings.engine.platform.db import bulk_insert
    from tidings.engine.messaging.tables import outbox_messages

    now = now_ms()
    with db.begin() as conn:
        # A retried message keeps its first copy: message_id is unique.
        bulk_insert(conn, outbox_messages, [{**r, "created_at": now} for r in rows], ignore_conflicts_on=["message_id"])


@hookimpl
def register_channels() -> list[Channel]:
    return [OutboxChannel()]


__all__ = ["OutboxChannel"]
