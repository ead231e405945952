"""Per provider-account send rate, shared by every API process and worker through one database row.

A token bucket holding at most ``burst = max(1, rate / 10)`` tokens (a tenth of a second of sending),
refilled at ``rate`` tokens per second. A sender *reserves* tokens: the row is updated in one
transaction (row lock on PostgreSQL, the write lock on SQLite), the balance may go negative, and the
sender sleeps until its reservation is covered. So over any window of T seconds, however many
processes send, at most ``rate * T + burst`` messages leave. Bigger batches are reserved in chunks of
``burst`` so they are spread out instead of leaving in one lump. Clocks: wall-clock seconds, so hosts
sharing a database need NTP-synchronised clocks (skew shifts the budget by rate x skew).
"""
from __future__ import annotations

import asyncio
import time

from sqlalchemy import Connection, Engine, select, update

from engine.db import insert_ignoring_conflicts
from engine.messaging_models import rate_buckets
from engine.serial import writing


def burst_of(rate: float) -> int:
    return max(1, int(rate / 10))


def reserve(db: Engine, workspace_id: int, channel: str, rate: float, n: int) -> float:
    """Take ``n`` tokens; returns how many seconds to wait before sending them."""
    with writing(db) as conn:
        return reserve_in(conn, workspace_id, channel, rate, n)


def reserve_in(conn: Connection, workspace_id: int, channel: str, rate: float, n: int) -> float:
    """:func:`reserve` inside the caller's write transaction."""
    burst = burst_of(rate)
    now = time.time()
    conn.execute(insert_ignoring_conflicts(conn, rate_buckets, ["workspace_id", "channel"]).values(
        workspace_id=workspace_id, channel=channel, tokens=float(burst), updated_at=now))
    where = (rate_buckets.c.workspace_id == workspace_id) & (rate_buckets.c.channel == channel)
    row = conn.execute(select(rate_buckets.c.tokens, rate_buckets.c.updated_at).where(where).with_for_update()).one()
    now = time.time()
    tokens = min(float(burst), row.tokens + max(0.0, now - row.updated_at) * rate) - n
    conn.execute(update(rate_buckets).where(where).values(tokens=tokens, updated_at=now))
    return max(0.0, -tokens / rate)


async def paced(db: Engine, workspace_id: int, channel: str, rate: float | None, items: list,
                first_wait: float | None = None):
    """Yield ``items`` in chunks, each when the bucket allows it (all at once when ``rate`` is None).
    ``first_wait``: the first chunk was already reserved (with the message rows) and must wait that long."""
    if not rate:
        yield items
        return
    size = burst_of(rate)
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        if start == 0 and first_wait is not None:
            wait = first_wait
        else:
            wait = await asyncio.to_thread(reserve, db, workspace_id, channel, rate, len(chunk))
        if wait:
            await asyncio.sleep(wait)
        yield chunk
