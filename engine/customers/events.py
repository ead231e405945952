"""Customer events: batch ingestion (idempotent by event id) and paging.

Names starting with `_` are Tidings' own message events (`_email.send`, `_segment.enter`, ...);
the public API refuses them and internal writers pass `allow_reserved=True`.
"""
from __future__ import annotations

import uuid
from typing import Any, Iterable, Sequence

from sqlalchemy import Connection, Engine, select

from tidings.engine.customers import on_write as changes
from tidings.engine.customers.history import expand, lock_event_order, read_page, stored_names
from tidings.engine.platform.batching import chunks, validate_all
from tidings.engine.platform.clock import datetime_to_ms, iso_to_ms, ms_to_iso, now_ms
from tidings.engine.customers.users import ensure_users, user_pk
from tidings.engine.platform.db import bulk_insert, reading, rows_where_in, writing
from tidings.engine.platform.errors import BatchRejected, InvalidInput
from tidings.engine.customers.tables import endpoints, events, users
from tidings.engine.platform.pagination import check_limit, decode_cursor, next_cursor
from tidings.engine.customers.schemas import EventIn, EventOut, EventsResult, Page
from tidings.engine.customers.limits import MAX_NAME, check_values_depth
from tidings.engine.platform.limits import check_batch_size
from tidings.engine.workspaces.service import WorkspaceRef

MAX_EVENT_VALUE = 1000


def _checker(allow_reserved: bool):
    def check(_index: int, e: EventIn) -> None:
        if not (e.user_id or e.endpoint_id):
            raise InvalidInput("an event names its customer with user_id or endpoint_id", field="user_id")
        if e.name.startswith("_") and not allow_reserved:
            raise InvalidInput(f"event names starting with '_' are reserved for Tidings, got {e.name!r}", field="name")
        for key, value in e.attributes.items():
            if len(key) > MAX_NAME:
                raise InvalidInput(f"attribute names are at most {MAX_NAME} characters", field=f"attributes.{key}")
            if isinstance(value, str) and len(value) > MAX_EVENT_VALUE:
                raise InvalidInput(f"attribute values are at most {MAX_EVENT_VALUE} characters", field=f"attributes.{key}")
        check_values_depth(e.attributes, "attributes")
        check_values_depth(e.metrics, "metrics")
    return check


def ingest(db: Engine, workspace: WorkspaceRef, batch: Sequence[EventIn], *, allow_reserved: bool = False) -> EventsResult:
    check_batch_size(len(batch), "events")
    validate_all(batch, _checker(allow_reserved), lambda e: e.id or e.name, "event")
    with writing(db) as conn:
        result, stored, created = record(conn, workspace.id, batch)
        changes.customers_changed(conn, workspace.id, created)  # new (empty) customers may match rules
        changes.events_recorded(conn, workspace.id, stored)
    return result


def insert_new(conn: Connection, workspace_id: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store the rows whose event ids are not stored yet (the first of an id within `rows` wins) and return
    them. Every path that writes events comes through here, so ids commit in order per workspace."""
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["event_id"], row)
    for (event_id,) in rows_where_in(conn, events, ["event_id"], "event_id", list(unique), {"workspace_id": workspace_id}):
        del unique[event_id]
    fresh = list(unique.values())
    if fresh:
        lock_event_order(conn, workspace_id)  # stream readers page by event id (PostgreSQL)
        # ON CONFLICT guards the race where a concurrent request stores the same id first.
        bulk_insert(conn, events, fresh, ignore_conflicts_on=["workspace_id", "event_id"])
    return fresh


def record(conn: Connection, workspace_id: int,
           batch: Sequence[EventIn]) -> tuple[EventsResult, list[dict[str, Any]], list[int]]:
    """Store events inside the caller's transaction; returns the rows actually stored (new ids only) and
    the row ids of users the events created."""
    by_endpoint = _resolve_endpoints(conn, workspace_id, [e.endpoint_id for e in batch if e.endpoint_id])
    owners, created = ensure_users(conn, workspace_id, [e.user_id for e in batch if e.user_id and not e.endpoint_id])
    now = now_ms()
    rows: dict[str, dict[str, Any]] = {}
    for e in batch:
        event_id = e.id or uuid.uuid4().hex
        if event_id in rows:
            continue  # the same id twice in one batch is one event
        endpoint_pk, owner_pk = by_endpoint[e.endpoint_id] if e.endpoint_id else (None, owners[e.user_id])
        rows[event_id] = {
            "workspace_id": workspace_id, "event_id": event_id, "user_pk": owner_pk, "endpoint_pk": endpoint_pk,
            "name": e.name, "ts": datetime_to_ms(e.timestamp) if e.timestamp else now, "attributes": e.attributes,
            "metrics": e.metrics, "received_at": now,
        }
    fresh = insert_new(conn, workspace_id, list(rows.values()))
    return (EventsResult(stored=len(fresh), duplicates=len(batch) - len(fresh), users_created=len(created)),
            fresh, created)


def events_of(conn: Connection, workspace_id: int, user_pks: list[int], names: Iterable[str],
              since: int) -> dict[int, list[dict[str, Any]]]:
    """Each customer's events with these names received at or after `since` (ms), in arrival order, as
    dicts of name, attributes, metrics, ts and received_at (segment events stored compactly are expanded)."""
    wanted = sorted(set(names))
    out: dict[int, list[dict[str, Any]]] = {}
    if not user_pks or not wanted:
        return out
    for part in chunks(user_pks, 5000):
        q = (select(events.c.user_pk, events.c.name, events.c.attributes, events.c.metrics, events.c.ts,
                    events.c.received_at)
             .where(events.c.workspace_id == workspace_id, events.c.user_pk.in_(part),
                    events.c.name.in_(stored_names(wanted)), events.c.received_at >= since).order_by(events.c.id))
        for r in expand(conn.execute(q), names=set(wanted)):
            out.setdefault(r.user_pk, []).append(
                {"name": r.name, "attributes": r.attributes, "metrics": r.metrics, "ts": r.ts,
                 "received_at": r.received_at})
    return out


def _resolve_endpoints(conn: Connection, workspace_id: int, endpoint_ids: list[str]) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for part in chunks(list(dict.fromkeys(endpoint_ids))):
        q = select(endpoints.c.endpoint_id, endpoints.c.id, endpoints.c.user_pk).where(
            endpoints.c.workspace_id == workspace_id, endpoints.c.endpoint_id.in_(part)
        )
        found.update({r.endpoint_id: (r.id, r.user_pk) for r in conn.execute(q)})
    missing = [eid for eid in dict.fromkeys(endpoint_ids) if eid not in found]
    if missing:
        errors = [{"index": None, "event": eid, "field": "endpoint_id", "message": f"no endpoint {eid!r}"} for eid in missing]
        raise BatchRejected(errors, len(endpoint_ids), [InvalidInput(e["message"], field="endpoint_id") for e in errors])
    return found


def list_events(db: Engine, workspace: WorkspaceRef, *, user_id: str | None = None, name: str | None = None,
                since: str | None = None, until: str | None = None, cursor: str | None = None,
                limit: int = 100) -> Page:
    """Events in arrival order, filtered; page with `next_cursor`. Segment events stored one row per
    customer and write are expanded here (engine/customers/history.py)."""
    check_limit(limit)
    after = decode_cursor(cursor)
    q = (
        select(events, users.c.user_id.label("owner"), endpoints.c.endpoint_id.label("ep"))
        .join(users, users.c.id == events.c.user_pk)
        .outerjoin(endpoints, endpoints.c.id == events.c.endpoint_pk)
        .order_by(events.c.id)
    )
    with reading(db) as conn:
        if user_id is not None:
            # The customer is this workspace's (user_pk looks it up there), so their events are: without a
            # workspace term SQLite searches the (user, name, ts) index instead of the workspace's events
            # (no statistics: 12 s for one customer's page among 1,000,000 events, not milliseconds).
            q = q.where(events.c.user_pk == user_pk(conn, workspace.id, user_id))
        else:
            q = q.where(events.c.workspace_id == workspace.id)
        if name is not None:
            q = q.where(events.c.name.in_(stored_names([name])))
        for value, field, op in ((since, "since", "__ge__"), (until, "until", "__lt__")):
            if value is not None:
                try:
                    q = q.where(getattr(events.c.ts, op)(iso_to_ms(value)))
                except ValueError:
                    raise InvalidInput(f"{field} must be ISO-8601, got {value!r}", field=field) from None
        rows = read_page(lambda position, n: conn.execute(q.where(events.c.id > position).limit(n)).all(),
                                 after, limit, None if name is None else {name})
    items = [
        EventOut(id=r.event_id, user_id=r.owner, endpoint_id=r.ep, name=r.name, timestamp=ms_to_iso(r.ts),
                 attributes=r.attributes, metrics=r.metrics)
        for r in rows
    ]
    return Page(items=items, next_cursor=next_cursor(rows, limit))
