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

from sqlalchemy import Connection, Engine

from tidings.engine.channels.tables import rate_buckets
from tidings.engine.platform.db import writing
from tidings.engine.platform.metrics_registry import RATE_LIMIT_WAIT


def burst_of(rate: float) -> int:
    return max(1, int(rate / 10))


def reserve(db: Engine, workspace_id: int, channel: str, rate: float, n: int) -> float:
    """Take ``n`` tokens; returns how many seconds to wait before sending them."""
    with writing(db) as conn:
        return reserve_in(conn, workspace_id, channel, rate, n)


def reserve_in(conn: Connection, workspace_id: int, channel: str, rate: float, n: int) -> float:
    """:func:`reserve` inside the caller's write transaction. One upsert: on PostgreSQL its row lock (on
    SQLite the database's write lock) orders concurrent reservations, and it is one statement instead of
    three on every send's write transaction. ``now`` is read before a PostgreSQL row lock is granted, so a
    reservation that waited may be older than the row: it refills nothing and leaves the row's time alone."""
    burst = float(burst_of(rate))
    now = time.time()
    pg = conn.dialect.name == "postgresql"
    least, greatest, mark = ("LEAST", "GREATEST", "%s") if pg else ("min", "max", "?")
    t = rate_buckets.name
    sql = (f"INSERT INTO {t} (workspace_id, channel, tokens, updated_at) VALUES ({mark}, {mark}, {mark}, {mark}) "
           f"ON CONFLICT (workspace_id, channel) DO UPDATE SET tokens = {least}({mark}, {t}.tokens"
           f" + {greatest}(0.0, excluded.updated_at - {t}.updated_at) * {mark}) - {mark},"
           f" updated_at = {greatest}(excluded.updated_at, {t}.updated_at) RETURNING tokens")
    tokens = conn.exec_driver_sql(sql, (workspace_id, channel, burst - n, now, burst, float(rate), float(n))).scalar_one()
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
        RATE_LIMIT_WAIT.observe(wait)
        if wait:
            await asyncio.sleep(wait)
        yield chunk
