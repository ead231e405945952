"""Segment history (`_segment.enter` / `_segment.exit` events) stored compactly in the event table, and the
order in which a workspace's event ids commit (every event writer, segments' included, takes it).

A batch write can change hundreds of thousands of memberships (5,000 new customers entering ~54
segments each), and one event row per change costs more than the rest of the write. So a customer
whose memberships change more than once in one write gets ONE row in `event`, named
`_segment.changes`, whose attributes list the changes in order (`{"changes": ["+vip", "-trial"]}`:
`+` entered, `-` exited; segment ids never start with either). A single change stays an ordinary
`_segment.enter` / `_segment.exit` row.

The compact row still gives every event its own position in the event id order: the write reserves
one id per change, contiguous per row, and the row takes the LAST id of its range, so the k-th of n
changes is at `id - n + 1 + k` and no other row can take an id inside the range. Event ids (`event_id`)
are `{prefix}-{counter}` as for every Tidings event; the row holds its first, the k-th is
`{prefix}-{first + k}`. Readers (`expand`) turn compact rows back into the events they stand for, so
what users see — names, attributes, order, stream positions and cursors — is what one row per change
gave. Rows a reader does not expand never match a query by name other than `_segment.changes`; recency
(`active`) reads only `ts`, which the compact row carries like its events.
"""
from __future__ import annotations

import collections
import uuid
from typing import Any, Collection, Iterable, Sequence

import msgspec
from sqlalchemy import Connection

from tidings.engine.platform.db import insert_tuples, reserve_ids
from tidings.engine.customers.tables import events

ENTER, EXIT = "_segment.enter", "_segment.exit"
SEGMENT_EVENTS = (ENTER, EXIT)
COMPACT = "_segment.changes"  # Tidings' own name; the public API refuses names starting with `_`

_COLUMNS = ["id", "workspace_id", "event_id", "user_pk", "name", "ts", "attributes", "metrics", "received_at"]


_ORDER_LOCK = 0x7469_6400_0000  # + workspace id: pg_advisory_xact_lock key space of event writes


def lock_event_order(conn: Connection, workspace_id: int) -> None:
    """Make a workspace's event ids commit in order, so readers that page by id (event streams, SSE)
    never pass an id whose transaction commits later. SQLite already commits one writer at a time;
    on PostgreSQL the transaction takes an advisory lock held until it commits."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_ORDER_LOCK + workspace_id,))


def _reserve(conn: Connection, n: int) -> list[int]:
    """n fresh event ids, ascending. SQLite: the write transaction holds the database's only write lock,
    so the ids above the current maximum are ours. PostgreSQL: from the table's sequence (contiguous
    unless another transaction draws from it at the same moment; `record` splits at any gap)."""
    if conn.dialect.name == "postgresql":
        return reserve_ids(conn, events, n)
    top = conn.exec_driver_sql("SELECT max(id) FROM event").scalar() or 0
    return list(range(top + 1, top + n + 1))


def _lock_and_reserve(conn: Connection, workspace_id: int, n: int) -> list[int]:
    """lock_event_order then _reserve. On PostgreSQL in one statement (one round trip of a single write's
    few): the ids are computed in the select list, which is projected only from the joined row of the
    materialized lock, so no id is drawn before the lock is held."""
    if conn.dialect.name != "postgresql":
        lock_event_order(conn, workspace_id)
        return _reserve(conn, n)
    return sorted(conn.exec_driver_sql(
        "WITH held AS MATERIALIZED (SELECT pg_advisory_xact_lock(%s)) "
        "SELECT nextval((SELECT pg_get_serial_sequence('event', 'id'))) FROM held, generate_series(1, %s)",
        (_ORDER_LOCK + workspace_id, n)).scalars())


def record(conn: Connection, workspace_id: int, changes: Sequence[tuple[str, int, bool]], now: int,
           expanded: bool = False) -> list[dict[str, Any]]:
    """Store the events of these membership changes (segment id, user pk, entered?), one row per customer
    (per contiguous id range), customers in user pk order, each customer's changes in the given order.
    With `expanded`, returns the events as one dict per change (what journey entry matching reads)."""
    if not changes:
        return []
    by_user: dict[int, list[str]] = collections.defaultdict(list)
    for sid, pk, entered in changes:
        by_user[pk].append(("+" if entered else "-") + sid)
    ids = _lock_and_reserve(conn, workspace_id, len(changes))
    prefix = uuid.uuid4().hex[:16]
    encoded: dict[tuple[str, ...], str] = {}  # the same few change lists repeat across customers
    singles: dict[str, str] = {}
    rows: list[tuple] = []
    out: list[dict[str, Any]] = []
    at = 0
    for pk in sorted(by_user):
        marks = by_user[pk]
        while marks:
            # the longest run of consecutive ids from here (all of them, except on a PostgreSQL race)
            n = 1
            while n < len(marks) and ids[at + n] == ids[at] + n:
                n += 1
            run, marks = marks[:n], marks[n:]
            last_id = ids[at + n - 1]
            if n == 1:
                mark = run[0]
                attrs = singles.get(mark)
                if attrs is None:
                    attrs = singles[mark] = msgspec.json.encode({"segment_id": mark[1:]}).decode()
                name = ENTER if mark[0] == "+" else EXIT
            else:
                key = tuple(run)
                attrs = encoded.get(key)
                if attrs is None:
                    attrs = encoded[key] = msgspec.json.encode({"changes": run}).decode()
                name = COMPACT
            rows.append((last_id, workspace_id, f"{prefix}-{at}", pk, name, now, attrs, "{}", now))
            if expanded:
                out += [{"event_id": f"{prefix}-{at + k}", "user_pk": pk, "name": ENTER if m[0] == "+" else EXIT,
                         "attributes": {"segment_id": m[1:]}, "metrics": {}, "ts": now, "received_at": now}
                        for k, m in enumerate(run)]
            at += n
    insert_tuples(conn, events, _COLUMNS, rows)
    return out


def stored_names(names: Iterable[str]) -> list[str]:
    """The stored names to query for events with these names (segment events may be compact rows)."""
    names = list(names)
    return names + [COMPACT] if any(n in SEGMENT_EVENTS for n in names) and COMPACT not in names else names


_shapes: dict[tuple[str, ...], type] = {}


def _shape(fields: tuple[str, ...]) -> type:
    cls = _shapes.get(fields)
    if cls is None:
        cls = _shapes[fields] = collections.namedtuple("ExpandedEvent", fields)  # type: ignore[misc]
    return cls


def expand_one(row: Any) -> list[Any]:
    """The events a compact row stands for, as rows with the same fields as `row` (id, event_id, name,
    attributes and metrics replaced where the row has them)."""
    changes = row.attributes["changes"]
    fields = tuple(row._fields)
    cls = _shape(fields)
    base = row._asdict()
    has_id, has_event_id = "id" in base, "event_id" in base
    if has_event_id:
        prefix, first = row.event_id.rsplit("-", 1)
        first = int(first)
    out = []
    for k, mark in enumerate(changes):
        values = dict(base, name=ENTER if mark[0] == "+" else EXIT, attributes={"segment_id": mark[1:]})
        if "metrics" in base:
            values["metrics"] = {}
        if has_id:
            values["id"] = row.id - len(changes) + 1 + k
        if has_event_id:
            values["event_id"] = f"{prefix}-{first + k}"
        out.append(cls(**values))
    return out


def expand(rows: Iterable[Any], after: int | None = None, names: Collection | None = None) -> list[Any]:
    """`rows` (event rows in id order) with compact rows replaced by their events; keeps only events at
    positions after `after` and, given `names`, with those names. Other rows pass through unchanged."""
    out = []
    for row in rows:
        if row.name == COMPACT:
            for ev in expand_one(row):
                if (after is None or ev.id > after) and (names is None or ev.name in names):
                    out.append(ev)
        elif names is None or row.name in names:
            out.append(row)
    return out


def read_page(fetch, after: int, limit: int, names: Collection | None = None) -> list[Any]:
    """Up to `limit` events after position `after`: `fetch(after, limit)` returns stored rows in id order
    (for `names`, it must also return compact rows, see `stored_names`). A compact row can stand for more
    events than fit, or for none of `names`, so this reads on until the page is full or the rows end."""
    out: list[Any] = []
    position = after
    while True:
        rows = fetch(position, limit)
        out += expand(rows, after, names)
        if len(out) >= limit or len(rows) < limit:
            return out[:limit]
        position = rows[-1].id
