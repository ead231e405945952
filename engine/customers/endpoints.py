"""Endpoints: one address on one channel, owned by a user. Upsert with merge, read, delete."""
from __future__ import annotations

from collections import Counter
from typing import Any, Collection, Mapping, Sequence

from msgspec import UNSET, to_builtins
from sqlalchemy import Connection, Engine, delete, func, select, update

from tidings.engine.customers import on_write as changes
from tidings.engine.customers.attributes import merge, register_item_names
from tidings.engine.platform.batching import chunks, single, validate_batch
from tidings.engine.platform.clock import iso_to_ms, now_ms
from tidings.engine.customers.users import check_user, endpoint_out, ensure_users, user_pk, write_users
from tidings.engine.platform.db import bulk_insert, bulk_update, driver_rows, reading, rows_where_in, writing
from tidings.engine.platform.errors import BatchRejected, InvalidInput, LimitExceeded, NotFound
from tidings.engine.customers.tables import endpoints, events, users
from tidings.engine.customers.schemas import BatchResult, EndpointBatchItem, EndpointFields, EndpointOut, UserBatchItem
from tidings.engine.customers.limits import (
    MAX_ENDPOINTS_PER_USER, check_address, check_attributes, check_locale, check_metrics, check_timezone,
)
from tidings.engine.workspaces.service import WorkspaceRef


def check_endpoint(_index: int, item: EndpointBatchItem) -> None:
    """The checks of one batch item that need no database (raises InvalidInput naming the field)."""
    if not item.endpoint_id:
        raise InvalidInput("endpoint_id is required", field="endpoint_id")
    if item.address is not UNSET and item.channel is not UNSET:
        check_address(item.channel, item.address)
    check_attributes(item.attributes, "attributes")
    check_metrics(item.metrics, "metrics")
    if item.demographic is not UNSET:
        check_timezone(item.demographic.timezone, "demographic.timezone")
        check_locale(item.demographic.locale, "demographic.locale")
    if item.location is not UNSET:
        loc = item.location
        if loc.latitude is not None and not -90 <= loc.latitude <= 90:
            raise InvalidInput("latitude must be between -90 and 90", field="location.latitude")
        if loc.longitude is not None and not -180 <= loc.longitude <= 180:
            raise InvalidInput("longitude must be between -180 and 180", field="location.longitude")
    if item.effective_date not in (UNSET, None):
        try:
            iso_to_ms(item.effective_date)
        except ValueError:
            raise InvalidInput("effective_date must be an ISO-8601 date-time", field="effective_date") from None


def upsert_endpoint(db: Engine, workspace: WorkspaceRef, endpoint_id: str, fields: EndpointFields) -> EndpointOut:
    item = EndpointBatchItem(endpoint_id=endpoint_id, **{f: getattr(fields, f) for f in fields.__struct_fields__})
    single(lambda: upsert_endpoints(db, workspace, [item]))
    return get_endpoint(db, workspace, endpoint_id)


def upsert_endpoints(db: Engine, workspace: WorkspaceRef, items: Sequence[EndpointBatchItem]) -> BatchResult:
    validate_batch(items, check_endpoint, "endpoint_id")
    with writing(db) as conn:
        register_item_names(conn, workspace.id, items)
        user_pks, created = write_endpoints(conn, workspace.id, items)
        changes.customers_changed(conn, workspace.id, user_pks)
    return BatchResult(written=len(items), created=created)


ENDPOINT_COLUMNS = [c.name for c in endpoints.columns]


def _load(conn: Connection, workspace_id: int, endpoint_ids: list[str]) -> dict[str, dict[str, Any]]:
    # straight to the driver (one array on PostgreSQL): SQLAlchemy's expanding IN of 900 ids per statement
    # was compiled, parsed and planned three times per 2,000-row import chunk
    rows = rows_where_in(conn, endpoints, ENDPOINT_COLUMNS, "endpoint_id", endpoint_ids, {"workspace_id": workspace_id})
    found = {}
    for r in rows:
        row = dict(zip(ENDPOINT_COLUMNS, r))
        found[row["endpoint_id"]] = row
    return found


def _owner_of(item: EndpointBatchItem, row: dict[str, Any] | None) -> str | None:
    """The user id the endpoint will belong to; None keeps the current owner.
    An endpoint sent without a user (or with user_id null) is its own user, named by its id."""
    if item.user_id is UNSET:
        return None if row else item.endpoint_id
    return item.user_id or item.endpoint_id


def write_endpoints(conn: Connection, workspace_id: int, items: Sequence[EndpointBatchItem],
                    known_owners: Mapping[str, int] | None = None,
                    new_owners: Collection[int] = ()) -> tuple[list[int], int]:
    """Upsert checked items (check_endpoint) in the caller's transaction, creating missing owners; raises
    BatchRejected for what needs the stored rows (limits). Returns (the owners' row ids, how many endpoints
    are new). The caller tells on_write.customers_changed.

    `known_owners` (user id -> row id) are users the caller has just written in this transaction, so they
    are not read again; `new_owners`, the row ids among them that it created (they have no endpoints yet)."""
    current = _load(conn, workspace_id, list(dict.fromkeys(i.endpoint_id for i in items)))
    known = known_owners or {}
    wanted = [o for i in items if (o := _owner_of(i, current.get(i.endpoint_id)))]
    owners, created = ensure_users(conn, workspace_id, [o for o in wanted if o not in known])
    owners.update({o: known[o] for o in wanted if o in known})
    now = now_ms()
    rows: dict[str, dict[str, Any]] = {}
    errors: list[tuple[int | None, str, InvalidInput]] = []
    for index, item in enumerate(items):
        row = rows.get(item.endpoint_id) or current.get(item.endpoint_id)
        row = dict(row) if row else None
        try:
            rows[item.endpoint_id] = _merged(workspace_id, item, row, owners, now)
        except InvalidInput as exc:
            errors.append((index, item.endpoint_id, exc))
    if not errors:
        errors = _over_endpoint_limit(conn, rows, current, set(created) | set(new_owners))
    if errors:
        report = [{"index": i, "endpoint_id": eid, "field": e.field, "message": e.message} for i, eid, e in errors]
        raise BatchRejected(report, len(items), [e for _, _, e in errors])
    new = [r for eid, r in rows.items() if eid not in current]
    old = [r for eid, r in rows.items() if eid in current]
    bulk_insert(conn, endpoints, new)
    cols = ["user_pk", "channel", "address", "attributes", "metrics", "opt_out", "demographic", "location",
            "effective_date", "updated_at", "id"]
    bulk_update(conn, endpoints, [{c: r[c] for c in cols} for r in old])
    touched = {r["user_pk"] for r in rows.values()} | {current[e]["user_pk"] for e in rows if e in current}
    return sorted(touched), len(new)


def _merged(workspace_id: int, item: EndpointBatchItem, row: dict[str, Any] | None,
            owners: dict[str, int], now: int) -> dict[str, Any]:
    if row is None:
        if item.channel is UNSET or item.address is UNSET:
            raise InvalidInput("a new endpoint needs channel and address", field="channel" if item.channel is UNSET else "address")
        row = {"workspace_id": workspace_id, "endpoint_id": item.endpoint_id, "attributes": {}, "metrics": {},
               "opt_out": False, "demographic": {}, "location": {}, "effective_date": None, "created_at": now}
    owner = _owner_of(item, row if "id" in row else None)
    if owner is not None:
        row["user_pk"] = owners[owner]
    if item.channel is not UNSET:
        row["channel"] = item.channel
    if item.address is not UNSET:
        row["address"] = item.address
    check_address(row["channel"], row["address"])  # a channel change must still fit the stored address
    row["attributes"] = merge(row["attributes"], item.attributes)
    row["metrics"] = merge(row["metrics"], item.metrics)
    if item.opt_out is not UNSET:
        row["opt_out"] = item.opt_out
    if item.demographic is not UNSET:
        row["demographic"] = {k: v for k, v in to_builtins(item.demographic).items() if v is not None}
    if item.location is not UNSET:
        row["location"] = {k: v for k, v in to_builtins(item.location).items() if v is not None}
    if item.effective_date is not UNSET:
        row["effective_date"] = iso_to_ms(item.effective_date) if item.effective_date else None
    row["updated_at"] = now
    return row


def _over_endpoint_limit(conn: Connection, rows: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]],
                         new_owners: set[int] | None = None) -> list[tuple[int | None, str, InvalidInput]]:
    """Pinpoint allows 15 endpoints per user: count what each owner will have after this write. Owners in
    `new_owners` were created in this transaction after the endpoints were read, so they have none stored
    (no count to read)."""
    owners = sorted({r["user_pk"] for r in rows.values()} - (new_owners or set()))
    counts: Counter[int] = Counter()
    if conn.dialect.name == "postgresql":  # one array, one plan (see platform/db.py rows_where_in)
        if owners:
            counts.update(dict(driver_rows(conn, "SELECT user_pk, count(*) FROM endpoint WHERE user_pk = ANY(%s) "
                                                 "GROUP BY user_pk", (owners,))))
    else:
        for part in chunks(owners):
            q = select(endpoints.c.user_pk, func.count()).where(endpoints.c.user_pk.in_(part)).group_by(endpoints.c.user_pk)
            counts.update(dict(conn.execute(q).all()))
    for eid, r in rows.items():
        if eid in current:
            counts[current[eid]["user_pk"]] -= 1
        counts[r["user_pk"]] += 1
    over = {pk for pk, n in counts.items() if n > MAX_ENDPOINTS_PER_USER}
    return [
        (None, eid, LimitExceeded(
            f"a user has at most {MAX_ENDPOINTS_PER_USER} endpoints; this write would give it {counts[r['user_pk']]}",
            field="user_id"))
        for eid, r in rows.items() if r["user_pk"] in over
    ]


def get_endpoint(db: Engine, workspace: WorkspaceRef, endpoint_id: str) -> EndpointOut:
    with reading(db) as conn:
        row = conn.execute(
            select(endpoints, users.c.user_id.label("owner"))
            .join(users, users.c.id == endpoints.c.user_pk)
            .where(endpoints.c.workspace_id == workspace.id, endpoints.c.endpoint_id == endpoint_id)
        ).first()
    if row is None:
        raise NotFound(f"no endpoint {endpoint_id!r}", field="endpoint_id")
    return endpoint_out(row, row.owner)


def delete_endpoint(db: Engine, workspace: WorkspaceRef, endpoint_id: str) -> None:
    """Remove the endpoint; its user's events stay with the user."""
    with writing(db) as conn:
        row = conn.execute(
            select(endpoints.c.id, endpoints.c.user_pk)
            .where(endpoints.c.workspace_id == workspace.id, endpoints.c.endpoint_id == endpoint_id)
        ).first()
        if row is None:
            raise NotFound(f"no endpoint {endpoint_id!r}", field="endpoint_id")
        conn.execute(update(events).where(events.c.endpoint_pk == row.id).values(endpoint_pk=None))
        conn.execute(delete(endpoints).where(endpoints.c.id == row.id))
        changes.customers_changed(conn, workspace.id, [row.user_pk])


def get_endpoints(db: Engine, workspace: WorkspaceRef, endpoint_ids: Sequence[str]) -> dict[str, EndpointOut]:
    """The endpoints among `endpoint_ids` that exist, by id (an unknown id is simply absent)."""
    found: dict[str, EndpointOut] = {}
    with reading(db) as conn:
        for part in chunks(list(dict.fromkeys(endpoint_ids))):
            rows = conn.execute(
                select(endpoints, users.c.user_id.label("owner"))
                .join(users, users.c.id == endpoints.c.user_pk)
                .where(endpoints.c.workspace_id == workspace.id, endpoints.c.endpoint_id.in_(part))
            ).all()
            found.update({r.endpoint_id: endpoint_out(r, r.owner) for r in rows})
    return found


def existing_endpoint_ids(db: Engine, workspace: WorkspaceRef, endpoint_ids: Sequence[str]) -> set[str]:
    """Which of `endpoint_ids` exist (ids only: cheaper than get_endpoints when nothing else is read)."""
    found: set[str] = set()
    with reading(db) as conn:
        for part in chunks(list(dict.fromkeys(endpoint_ids))):
            found.update(conn.execute(select(endpoints.c.endpoint_id).where(
                endpoints.c.workspace_id == workspace.id, endpoints.c.endpoint_id.in_(part))).scalars())
    return found


def upsert_customers(db: Engine, workspace: WorkspaceRef, user_items: Sequence[UserBatchItem],
                     endpoint_items: Sequence[EndpointBatchItem]) -> BatchResult:
    """Users and endpoints in one transaction, all or nothing (Pinpoint's UpdateEndpoint writes the endpoint
    and its User.UserAttributes together): users first, so the endpoints' owners carry their attributes."""
    if user_items:
        validate_batch(user_items, check_user, "user_id")
    if endpoint_items:
        validate_batch(endpoint_items, check_endpoint, "endpoint_id")
    with writing(db) as conn:
        register_item_names(conn, workspace.id, [*user_items, *endpoint_items])
        user_pks, _ = write_users(conn, workspace.id, user_items) if user_items else ([], 0)
        endpoint_user_pks, created = write_endpoints(conn, workspace.id, endpoint_items) if endpoint_items else ([], 0)
        changes.customers_changed(conn, workspace.id, sorted(set(user_pks) | set(endpoint_user_pks)))
    return BatchResult(written=len(endpoint_items), created=created)


def delete_user_endpoints(db: Engine, workspace: WorkspaceRef, user_id: str) -> list[EndpointOut]:
    """Remove every endpoint of a user (the user, its attributes and its events stay); returns them."""
    with writing(db) as conn:
        owner = user_pk(conn, workspace.id, user_id)
        rows = conn.execute(select(endpoints).where(endpoints.c.user_pk == owner).order_by(endpoints.c.id)).all()
        removed = [endpoint_out(r, user_id) for r in rows]
        pks = [r.id for r in rows]
        if pks:
            conn.execute(update(events).where(events.c.endpoint_pk.in_(pks)).values(endpoint_pk=None))
            conn.execute(delete(endpoints).where(endpoints.c.id.in_(pks)))
            changes.customers_changed(conn, workspace.id, [owner])
    return removed
