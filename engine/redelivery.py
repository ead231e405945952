"""Transactional messages that failed transiently are sent again, by the worker, when their next attempt is due.

A POST /v1/messages whose provider was unreachable answers `retrying` at once (the request is not held);
its message rows stay `retrying` with the rendered message (engine.messages), and this loop, run by every
`tidings worker`, resends the rows whose `next_attempt_at` has come, through the same pipeline: per chunk,
recorded as it completes, transient failures rescheduled with backoff until the retry window is over.
The rows are the durable queue: a worker that dies mid-way leaves them `retrying`, and any worker picks them
up again once the lease below has run out. Journey messages are not handled here: their cohort workflow
brings the member back to the send step at the next attempt (engine.journeys.activities).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, select, update

from engine.channel_config import routes_for
from engine.channels import OutgoingMessage
from engine.clock import now_ms
from engine.db import reading
from engine.messages import RetryWindow, Target, Unit, _Claimed, _Pending, _send, _Sending
from engine.messaging_models import messages
from engine.serial import write

log = logging.getLogger("tidings.redelivery")
LEASE_MS = 120_000  # a claimed row is another worker's to take again only after this long
BATCH = 500
EVERY = 5.0  # seconds between looks for due messages
_COLS = [messages.c.id, messages.c.workspace_id, messages.c.message_id, messages.c.idempotency_key,
         messages.c.endpoint, messages.c.user_pk, messages.c.endpoint_pk, messages.c.channel_type,
         messages.c.template_id, messages.c.attempts, messages.c.created_at, messages.c.content]


def _claim_due(conn: Connection, owner: str, limit: int) -> list[Any]:
    """The due rows, now this owner's: their next attempt is pushed a lease ahead, so a concurrent loop
    (another worker) skips them, and takes them again only if this one died."""
    now = now_ms()
    q = (select(*_COLS).where(messages.c.status == "retrying", messages.c.transactional.is_(True),
                              messages.c.next_attempt_at <= now)
         .order_by(messages.c.next_attempt_at).limit(limit))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    rows = conn.execute(q).all()
    if rows:
        conn.execute(update(messages).where(messages.c.id.in_([r.id for r in rows]))
                     .values(owner=owner, next_attempt_at=now + LEASE_MS))
    return rows


async def redeliver_due(db: Engine, plugins, *, limit: int = BATCH) -> int:
    """Send the due `retrying` transactional messages once; returns how many were handed to a channel."""
    owner = uuid.uuid4().hex
    rows = await write(db, lambda conn: _claim_due(conn, owner, limit))
    groups: dict[tuple[int, str], list[Any]] = {}
    for r in rows:
        groups.setdefault((r.workspace_id, r.channel_type), []).append(r)
    window = RetryWindow.from_env()
    for (ws_id, channel_type), group in groups.items():
        with reading(db) as conn:
            routes = routes_for(conn, plugins, ws_id, [channel_type])
        units, pending = [], []
        for r in group:
            out = msgspec.convert(r.content, OutgoingMessage)
            attrs = {k: v for k, v in out.metadata.items() if k not in ("workspace_id", "template_id")}
            units.append(Unit(key=r.idempotency_key, channel_type=channel_type, template=None,
                              template_id=r.template_id, data={}, attrs=attrs, user_pk=r.user_pk))
            endpoint_id = None if r.endpoint.startswith("to:") else r.endpoint
            target = Target(endpoint=r.endpoint, address=out.to, endpoint_pk=r.endpoint_pk, endpoint_id=endpoint_id)
            pending.append(_Pending(len(units) - 1, target, r.message_id, out, row_id=r.id, fresh=False,
                                    created_at=r.created_at, attempts=r.attempts or 0))
        sending = _Sending(db, ws_id, units, routes, owner, window)
        await _send(sending, pending, units, _Claimed(routes, {}, {}))
        done = sending.take()
        await asyncio.shield(write(db, lambda conn: sending.record(conn, done)))
    return len(rows)


async def run_forever(db: Engine, plugins, every: float = EVERY) -> None:
    """The worker's loop: look for due messages every `every` seconds (at once again after a full batch)."""
    while True:
        try:
            n = await redeliver_due(db, plugins)
        except Exception:  # a database hiccup must not end the loop; the rows stay due
            log.exception("redelivery failed; trying again in %.0f s", every)
            n = 0
        if n < BATCH:
            await asyncio.sleep(every)
