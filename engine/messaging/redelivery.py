"""Transactional messages that failed transiently are sent again, by the worker, when their next attempt is due.

A POST /v1/messages whose provider was unreachable answers `retrying` at once (the request is not held);
its message rows stay `retrying` with the rendered message (tidings.engine.messaging.dispatch), and this loop, run by every
`tidings worker`, resends the rows whose `next_attempt_at` has come, through the same pipeline: per chunk,
recorded as it completes, transient failures rescheduled with backoff until the retry window is over.
The rows are the durable queue: a worker that dies mid-way leaves them `retrying`, and any worker picks them
up again once the lease below has run out. Journey messages are not handled here: their cohort workflow
brings the member back to the send step at the next attempt (tidings.engine.journeys.runtime.activities).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, and_, or_, select, update

from tidings.engine.channels.config import routes_for
from tidings.engine.channels.contract import OutgoingMessage
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import reading, rows_where_in
from tidings.engine.messaging.dispatch import RetryWindow, Target, Unit, _Claimed, _Pending, _send, _Sending
from tidings.engine.messaging.tables import messages
from tidings.engine.customers.tables import endpoints
from tidings.engine.platform.write_queue import write

log = logging.getLogger("tidings.redelivery")
LEASE_MS = 120_000  # a claimed row is another worker's to take again only after this long
BATCH = 500
EVERY = 5.0  # seconds between looks for due messages
_COLS = [messages.c.id, messages.c.workspace_id, messages.c.message_id, messages.c.idempotency_key,
         messages.c.endpoint, messages.c.user_pk, messages.c.endpoint_pk, messages.c.channel_type,
         messages.c.template_id, messages.c.attempts, messages.c.created_at, messages.c.content]


def _claim_due(conn: Connection, owner: str, limit: int) -> list[Any]:
    """The due rows, now this owner's: their next attempt is pushed a lease ahead (and `updated_at` moved to
    now), so a concurrent loop (another worker) skips them, and takes them again only if this one died.
    Due: `retrying` rows whose next attempt has come, and `queued` rows untouched for a lease (the API
    process sending them died mid-way: nothing else would finish them). Rows whose endpoint has opted out
    or been deleted since are failed here, not sent."""
    now = now_ms()
    due = or_(and_(messages.c.status == "retrying", messages.c.next_attempt_at <= now),
              and_(messages.c.status == "queued", messages.c.updated_at <= now - LEASE_MS))
    q = (select(*_COLS).where(due, messages.c.transactional.is_(True))
         .order_by(messages.c.next_attempt_at).limit(limit))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    rows = _drop_undeliverable(conn, list(conn.execute(q)), now)
    if rows:
        conn.execute(update(messages).where(messages.c.id.in_([r.id for r in rows]))
                     .values(owner=owner, next_attempt_at=now + LEASE_MS, updated_at=now))
    return rows


def _drop_undeliverable(conn: Connection, rows: list[Any], now: int) -> list[Any]:
    """Fail the rows that must not be sent now: the endpoint opted out or was deleted since the first attempt
    (which checked it), or the row has no stored content to send. Returns the others."""
    live = dict(rows_where_in(conn, endpoints, ["id", "opt_out"], "id",
                              list({r.endpoint_pk for r in rows if r.endpoint_pk is not None})))
    why: dict[int, str] = {}
    for r in rows:
        if r.endpoint_pk is not None and r.endpoint_pk not in live:
            why[r.id] = "opted_out: the endpoint was deleted before the message could be delivered"
        elif r.endpoint_pk is not None and live[r.endpoint_pk]:
            why[r.id] = "opted_out: the endpoint opted out before the message could be delivered"
        elif not r.content:
            why[r.id] = "not delivered: the sender stopped mid-send and the message's content was not kept"
    for reason in set(why.values()):
        conn.execute(update(messages).where(messages.c.id.in_([i for i, w in why.items() if w == reason]))
                     .values(status="failed", error=reason, permanent=True, next_attempt_at=None, content=None,
                             updated_at=now))
    return [r for r in rows if r.id not in why]


async def redeliver_due(db: Engine, plugins, *, limit: int = BATCH) -> int:
    """Send the due transactional messages (see _claim_due) once; returns how many were handed to a channel."""
    owner = uuid.uuid4().hex
    rows = await write(db, lambda conn: _claim_due(conn, owner, limit))
    groups: dict[tuple[int, str], list[Any]] = {}
    for r in rows:
        groups.setdefault((r.workspace_id, r.channel_type), []).append(r)
    window = RetryWindow.current()
    for (workspace_id, channel_type), group in groups.items():
        with reading(db) as conn:
            routes = routes_for(conn, plugins, workspace_id, [channel_type])
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
        sending = _Sending(db, workspace_id, units, routes, owner, window)
        await _send(sending, pending, units, _Claimed(routes, {}, {}))
        done = sending.take()
        await asyncio.shield(write(db, lambda conn: sending.record(conn, done)))  # noqa: B023  # awaited here
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
