"""The send step's seam to messaging: `send(...)` hands a whole batch to `engine.messages.send_journey_step`.

Until messaging is installed (or when a test asks for it) a *recording sender* stands in: it records
one `_{channel}.send` event per customer whose event id is derived from the idempotency key, so a
retried step never records a send twice. Choose another sender with TIDINGS_JOURNEY_SENDER=module:function
(same signature as `record_sends`).
"""
from __future__ import annotations

import hashlib
import importlib
import os
from typing import Any, Awaitable, Callable

import msgspec

try:  # the messaging work's contract
    from engine.messages import JourneySend, SendOutcome, send_journey_step as _messaging  # type: ignore
except ImportError:  # pragma: no cover - until messaging lands
    _messaging = None

    class JourneySend(msgspec.Struct, frozen=True):  # type: ignore[no-redef]
        user_pk: int
        idempotency_key: str
        variant: str | None = None
        data: dict = {}

    class SendOutcome(msgspec.Struct, frozen=True):  # type: ignore[no-redef]
        user_pk: int | None
        status: str
        message_ids: list[str] = []
        error: str | None = None
        endpoint_ids: list[str] = []


Sender = Callable[..., Awaitable[list[SendOutcome]]]


def message_id(idempotency_key: str) -> str:
    return hashlib.sha1(idempotency_key.encode()).hexdigest()


async def record_sends(db, settings, workspace_id: int, *, channel_type: str, template_id: str, data: dict,
                       sends: list[JourneySend], journey_id: str, journey_version: int, step_id: str,
                       now_ms: int | None = None) -> list[SendOutcome]:
    """Records the sends as `_{channel}.send` events (idempotent by key); delivers nothing."""
    import asyncio

    return await asyncio.to_thread(_record_sync, db, workspace_id, channel_type, template_id, sends, journey_id,
                                   journey_version, step_id, now_ms)


def _record_sync(db, workspace_id, channel_type, template_id, sends, journey_id, journey_version, step_id, now_ms):
    from sqlalchemy import select

    from engine import changes
    from engine.clock import ms_to_iso
    from engine.events import record
    from engine.models import users
    from engine.schemas import EventIn

    from datetime import datetime

    with db.begin() as conn:
        ids = dict(conn.execute(select(users.c.id, users.c.user_id).where(
            users.c.id.in_([s.user_pk for s in sends]))).all()) if sends else {}
        batch, outcomes = [], []
        for s in sends:
            mid = message_id(s.idempotency_key)
            if s.user_pk not in ids:
                outcomes.append(SendOutcome(user_pk=s.user_pk, status="no_endpoint", error="no such customer"))
                continue
            ts = datetime.fromisoformat(ms_to_iso(now_ms).replace("Z", "+00:00")) if now_ms else None
            batch.append(EventIn(id=f"send:{mid}", name=f"_{channel_type.lower()}.send", user_id=ids[s.user_pk],
                                 timestamp=ts, attributes={
                                     "journey_id": journey_id, "journey_version": journey_version, "step_id": step_id,
                                     "variant": s.variant, "message_id": mid, "template_id": template_id}))
            outcomes.append(SendOutcome(user_pk=s.user_pk, status="sent", message_ids=[mid]))
        if batch:
            _, stored, _ = record(conn, workspace_id, batch)
            changes.events_recorded(conn, workspace_id, stored)
            fresh = {r["event_id"] for r in stored}
            outcomes = [o if o.status != "sent" or f"send:{o.message_ids[0]}" in fresh
                        else SendOutcome(user_pk=o.user_pk, status="duplicate", message_ids=o.message_ids)
                        for o in outcomes]
    return outcomes


def resolve_sender(explicit: Sender | None = None) -> Sender:
    if explicit is not None:
        return explicit
    spec = os.environ.get("TIDINGS_JOURNEY_SENDER")
    if spec:
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name)
    if _messaging is not None:
        return _messaging_sender
    return record_sends


async def _messaging_sender(db, settings, workspace_id, **kw: Any) -> list[SendOutcome]:
    from engine.plugins import get_plugin_manager

    kw.pop("now_ms", None)
    return await _messaging(db, get_plugin_manager(), settings, workspace_id, **kw)
