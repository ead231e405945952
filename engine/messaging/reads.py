"""Reading messages back: one message with its events, and the outbox."""
from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Engine, select

from tidings.engine.platform.clock import ms_to_iso
from tidings.engine.platform.db import reading
from tidings.engine.platform.errors import NotFound
from tidings.engine.messaging.tables import messages, outbox_messages
from tidings.engine.customers.tables import endpoints, events, users
from tidings.engine.platform.pagination import check_limit, decode_cursor, next_cursor
from tidings.engine.customers.schemas import EventOut, Page
from tidings.engine.workspaces.service import WorkspaceRef

_FIELDS = ["message_id", "status", "channel", "channel_type", "address", "template_id", "journey_id",
           "journey_version", "step_id", "variant", "transactional", "error", "permanent", "attempts",
           "provider_message_id"]


def get_message(db: Engine, workspace: WorkspaceRef, message_id: str) -> dict[str, Any]:
    """The message and its events (those whose attributes.message_id is this message)."""
    with reading(db) as conn:
        m = conn.execute(select(messages).where(messages.c.workspace_id == workspace.id,
                                                messages.c.message_id == message_id)).first()
        if m is None:
            raise NotFound(f"no message {message_id!r}", field="message_id")
        owner = ep = None
        evs: list[EventOut] = []
        if m.user_pk is not None:
            owner = conn.execute(select(users.c.user_id).where(users.c.id == m.user_pk)).scalar()
            if m.endpoint_pk is not None:
                ep = conn.execute(select(endpoints.c.endpoint_id).where(endpoints.c.id == m.endpoint_pk)).scalar()
            # Message events sit on the customer's (user, name, ts) index; the id is checked here.
            rows = conn.execute(select(events, endpoints.c.endpoint_id.label("ep"))
                                .outerjoin(endpoints, endpoints.c.id == events.c.endpoint_pk)
                                .where(events.c.user_pk == m.user_pk, events.c.ts >= m.created_at - 1000)
                                .order_by(events.c.id)).all()
            evs = [EventOut(id=r.event_id, user_id=owner, endpoint_id=r.ep, name=r.name, timestamp=ms_to_iso(r.ts),
                            attributes=r.attributes, metrics=r.metrics)
                   for r in rows if r.name.startswith("_") and r.attributes.get("message_id") == message_id]
    out = {f: getattr(m, f) for f in _FIELDS}
    out |= {"user_id": owner, "endpoint_id": ep if ep else (None if m.endpoint.startswith("to:") else m.endpoint),
            "created_at": ms_to_iso(m.created_at), "updated_at": ms_to_iso(m.updated_at),
            # retrying: when the next attempt is due (`error` is the last attempt's)
            "next_attempt_at": ms_to_iso(m.next_attempt_at) if m.status == "retrying" and m.next_attempt_at else None,
            "events": msgspec.to_builtins(evs)}
    return out


def list_outbox(db: Engine, workspace: WorkspaceRef, *, address: str | None = None, cursor: str | None = None,
                limit: int = 100) -> Page:
    check_limit(limit)
    q = (select(outbox_messages).where(outbox_messages.c.workspace_id == workspace.id,
                                       outbox_messages.c.id > decode_cursor(cursor))
         .order_by(outbox_messages.c.id).limit(limit))
    if address is not None:
        q = q.where(outbox_messages.c.address == address)
    with reading(db) as conn:
        rows = conn.execute(q).all()
    items = [{"message_id": r.message_id, "channel_type": r.channel_type, "address": r.address, **r.content,
              "created_at": ms_to_iso(r.created_at)} for r in rows]
    return Page(items=items, next_cursor=next_cursor(rows, limit))
