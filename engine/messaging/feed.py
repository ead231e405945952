"""The messages feed: every message of a workspace, newest first, filtered the way people ask."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from tidings.engine.customers.tables import users
from tidings.engine.messaging.tables import messages
from tidings.engine.platform.clock import ms_to_iso
from tidings.engine.platform.db import reading
from tidings.engine.platform.pagination import check_limit, decode_cursor, encode_cursor
from tidings.engine.workspaces.service import WorkspaceRef

FILTERS = ("journey_id", "step_id", "channel", "status", "user_id")


def list_messages(db: Engine, workspace: WorkspaceRef, *, journey_id: str | None = None, step_id: str | None = None,
                  channel: str | None = None, status: str | None = None, user_id: str | None = None,
                  cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
    """A page of messages (newest first) and the cursor of the next page, None on the last."""
    check_limit(limit)
    before = decode_cursor(cursor)
    q = (select(messages, users.c.user_id).outerjoin(users, users.c.id == messages.c.user_pk)
         .where(messages.c.workspace_id == workspace.id).order_by(messages.c.id.desc()).limit(limit))
    if before:
        q = q.where(messages.c.id < before)
    for column, value in ((messages.c.journey_id, journey_id), (messages.c.step_id, step_id),
                          (messages.c.channel_type, channel.upper() if channel else None),
                          (messages.c.status, status), (users.c.user_id, user_id)):
        if value:
            q = q.where(column == value)
    with reading(db) as conn:
        rows = conn.execute(q).all()
    items = [{"message_id": r.message_id, "user_id": r.user_id, "channel": r.channel, "channel_type": r.channel_type,
              "address": r.address, "template_id": r.template_id, "journey_id": r.journey_id, "step_id": r.step_id,
              "status": r.status, "error": r.error, "created_at": ms_to_iso(r.created_at)} for r in rows]
    return {"items": items, "next_cursor": encode_cursor(rows[-1].id) if len(rows) == limit else None}
