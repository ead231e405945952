"""The outbox table's writes: what the built-in ``outbox`` channel (plugins/outbox.py) keeps instead of delivering.

The plugin lives below messaging and may not touch messaging's tables; the dispatcher hands it
:func:`outbox_store` bound to the database, and the plugin calls it with the rows it built.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from sqlalchemy import Engine

from tidings.engine.messaging.tables import outbox_messages
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import bulk_insert, writing

OutboxStore = Callable[[list[dict]], None]


def store_outbox_messages(db: Engine, rows: list[dict]) -> None:
    """Keep each row (workspace_id, message_id, channel_type, address, content) in the outbox; a retried
    message keeps its first copy (message_id is unique)."""
    now = now_ms()
    with writing(db) as conn:
        bulk_insert(conn, outbox_messages, [{**r, "created_at": now} for r in rows], ignore_conflicts_on=["message_id"])


def outbox_store(db: Engine) -> OutboxStore:
    return partial(store_outbox_messages, db)
