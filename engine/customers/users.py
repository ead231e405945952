"""Users: upsert with merge, read with endpoints, erase. One code path serves PUT and batch."""
from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import Connection, Engine, bindparam, delete, select

from tidings.engine.customers import on_write as changes
from tidings.engine.customers.attributes import merge, register_item_names
from tidings.engine.platform.batching import single, validate_batch
from tidings.engine.platform.clock import ms_to_iso, now_ms
from tidings.engine.platform.db import (
    COPY_FROM_ROWS, bulk_insert, bulk_update, reading, reserve_ids, rows_where_in, writing,
)
from tidings.engine.platform.errors import InvalidInput, NotFound
from tidings.engine.customers.tables import endpoints, events, users
from tidings.engine.customers.schemas import BatchResult, EndpointOut, UserBatchItem, UserFields, UserOut
from tidings.engine.customers.limits import check_attributes, check_locale, check_metrics, check_timezone
from tidings.engine.workspaces.service import WorkspaceRef
from msgspec import UNSET


def check_user(_index: int, item: UserBatchItem) -> None:
    """The checks of one batch item (raises InvalidInput naming the field); `_index` fits validate_batch."""
    if not item.user_id:
        raise InvalidInput("user_id is required", field="user_id")
    check_attributes(item.attributes, "attributes")
    check_metrics(item.metrics, "metrics")
    if item.timezone is not UNSET:
        check_timezone(item.timezone)
    if item.locale is not UNSET:
        check_locale(item.locale)


def upsert_user(db: Engine, workspace: WorkspaceRef, user_id: str, fields: UserFields) -> UserOut:
    item = UserBatchItem(user_id=user_id, **{f: getattr(fields, f) for f in fields.__struct_fields__})

    def write_and_read() -> UserOut:
        validate_batch([item], check_user, "user_id")
        # The answer is read in the write's own transaction: one connection instead of two, and it shows the
        # memberships this write made (read-your-writes) whatever commits after it.
        with writing(db) as conn:
            _write_checked(conn, workspace.id, [item])
            return _user_out(conn, workspace.id, user_id)

    return single(write_and_read)


def upsert_users(db: Engine, workspace: WorkspaceRef, items: Sequence[UserBatchItem]) -> BatchResult:
    """All or nothing: every item is checked before anything is written."""
    validate_batch(items, check_user, "user_id")
    with writing(db) as conn:
        created = _write_checked(conn, workspace.id, items)
    return BatchResult(written=len(items), created=created)


def _write_checked(conn: Connection, workspace_id: int, items: Sequence[UserBatchItem]) -> int:
    """Write checked items and tell the listeners; returns how many users are new."""
    register_item_names(conn, workspace_id, items)
    pks, created = write_users(conn, workspace_id, items)
    # Existing users only: segments that read none of the written fields need no re-check.
    changes.customers_changed(conn, workspace_id, pks, None if created else written_fields(items))
    return created


def write_users(conn: Connection, workspace_id: int, items: Sequence[UserBatchItem]) -> tuple[list[int], int]:
    """Upsert checked items (check_user) in the caller's transaction; returns (the users' row ids, how many
    are new). The caller tells on_write.customers_changed."""
    pks, new = write_users_mapped(conn, workspace_id, items)
    return list(pks.values()), len(new)


def write_users_mapped(conn: Connection, workspace_id: int,
                       items: Sequence[UserBatchItem]) -> tuple[dict[str, int], list[int]]:
    """write_users, returning (user id -> row id for every user written, the row ids created)."""
    ids = list(dict.fromkeys(i.user_id for i in items))
    current = {r["user_id"]: r for r in _load(conn, workspace_id, ids)}
    now = now_ms()
    new: dict[str, dict[str, Any]] = {}
    changed: dict[str, dict[str, Any]] = {}
    for item in items:  # a user twice in one batch: the later item merges over the earlier
        row = current.get(item.user_id) or new.get(item.user_id)
        if row is None:
            row = new[item.user_id] = {
                "workspace_id": workspace_id, "user_id": item.user_id, "attributes": {}, "metrics": {},
                "timezone": None, "locale": None, "created_at": now, "updated_at": now,
            }
        elif item.user_id in current:
            changed[item.user_id] = row
        row["attributes"] = merge(row["attributes"], item.attributes)
        row["metrics"] = merge(row["metrics"], item.metrics)
        if item.timezone is not UNSET:
            row["timezone"] = item.timezone
        if item.locale is not UNSET:
            row["locale"] = item.locale
        row["updated_at"] = now
    if conn.dialect.name == "postgresql" and len(new) >= COPY_FROM_ROWS:
        # ids drawn first, then the rows through COPY: an INSERT ... RETURNING of arrays spent its time
        # dumping thousands of JSON strings into array literals (0.74 s of a 20,000-row import's 5.7 s)
        created = reserve_ids(conn, users, len(new))
        for row, pk in zip(new.values(), created):
            row["id"] = pk
        bulk_insert(conn, users, list(new.values()))
    else:
        created = [pk for (pk,) in bulk_insert(conn, users, list(new.values()), returning=["id"])]
    bulk_update(conn, users, [
        {"attributes": r["attributes"], "metrics": r["metrics"], "timezone": r["timezone"], "locale": r["locale"],
         "updated_at": now, "id": r["id"]} for r in changed.values()
    ])
    pks = {uid: r["id"] for uid, r in current.items()}
    pks.update(zip(new, created))
    return pks, created


def written_fields(items: Sequence[UserBatchItem]) -> set[str]:
    """The user-level paths a batch writes, as rules name them."""
    out: set[str] = set()
    for i in items:
        out.update("attributes." + k for k in i.attributes)
        out.update("metrics." + k for k in i.metrics)
        if i.timezone is not UNSET:
            out.add("timezone")
        if i.locale is not UNSET:
            out.add("locale")
    return out


USER_COLUMNS = ["id", "user_id", "attributes", "metrics", "timezone", "locale"]


def _load(conn: Connection, workspace_id: int, user_ids: list[str]) -> list[dict[str, Any]]:
    rows = rows_where_in(conn, users, USER_COLUMNS, "user_id", user_ids, {"workspace_id": workspace_id})
    return [dict(zip(USER_COLUMNS, r)) for r in rows]


def _pks(conn: Connection, workspace_id: int, user_ids: list[str]) -> dict[str, int]:
    return {uid: pk for pk, uid in rows_where_in(conn, users, ["id", "user_id"], "user_id", user_ids,
                                                 {"workspace_id": workspace_id})}


def ensure_users(conn: Connection, workspace_id: int, user_ids: list[str]) -> tuple[dict[str, int], list[int]]:
    """Map user ids to row ids, creating empty users for unknown ids (events and endpoints may name them);
    also returns the row ids created."""
    ids = list(dict.fromkeys(user_ids))
    found = _pks(conn, workspace_id, ids)
    missing = [u for u in ids if u not in found]
    if missing:
        now = now_ms()
        created = bulk_insert(conn, users, [
            {"workspace_id": workspace_id, "user_id": u, "attributes": {}, "metrics": {}, "timezone": None,
             "locale": None, "created_at": now, "updated_at": now} for u in missing
        ], returning=["id", "user_id"])
        found.update({uid: pk for pk, uid in created})
        return found, [pk for pk, _ in created]
    return found, []


def user_pk(conn: Connection, workspace_id: int, user_id: str) -> int:
    pk = conn.execute(
        select(users.c.id).where(users.c.workspace_id == workspace_id, users.c.user_id == user_id)
    ).scalar()
    if pk is None:
        raise NotFound(f"no user {user_id!r}", field="user_id")
    return pk


# Built once: building a statement per call cost more than running it (its compiled form is cached).
_USER_BY_ID = select(users).where(users.c.workspace_id == bindparam("workspace_id"),
                                  users.c.user_id == bindparam("user_id"))
_ENDPOINTS_OF = select(endpoints).where(endpoints.c.user_pk == bindparam("user_pk")).order_by(endpoints.c.id)


def get_user(db: Engine, workspace: WorkspaceRef, user_id: str) -> UserOut:
    with reading(db) as conn:
        return _user_out(conn, workspace.id, user_id)


def _user_out(conn: Connection, workspace_id: int, user_id: str) -> UserOut:
    row = conn.execute(_USER_BY_ID, {"workspace_id": workspace_id, "user_id": user_id}).first()
    if row is None:
        raise NotFound(f"no user {user_id!r}", field="user_id")
    eps = conn.execute(_ENDPOINTS_OF, {"user_pk": row.id}).all()
    memberships = changes.memberships_of(conn, workspace_id, row.id)
    return UserOut(
        user_id=row.user_id, attributes=row.attributes, metrics=row.metrics, timezone=row.timezone,
        locale=row.locale, created_at=ms_to_iso(row.created_at), updated_at=ms_to_iso(row.updated_at),
        endpoints=[endpoint_out(e, row.user_id) for e in eps], segments=memberships,
    )


def endpoint_out(e, user_id: str) -> EndpointOut:
    return EndpointOut(
        endpoint_id=e.endpoint_id, user_id=user_id, channel=e.channel, address=e.address,
        attributes=e.attributes, metrics=e.metrics, opt_out=e.opt_out, demographic=e.demographic,
        location=e.location, effective_date=ms_to_iso(e.effective_date) if e.effective_date else None,
        created_at=ms_to_iso(e.created_at), updated_at=ms_to_iso(e.updated_at),
    )


def delete_user(db: Engine, workspace: WorkspaceRef, user_id: str) -> None:
    """Erase the user with its endpoints and events (a right-to-erasure request)."""
    with writing(db) as conn:
        pk = user_pk(conn, workspace.id, user_id)
        changes.customers_erased(conn, workspace.id, [pk])
        conn.execute(delete(events).where(events.c.user_pk == pk))
        conn.execute(delete(endpoints).where(endpoints.c.user_pk == pk))
        conn.execute(delete(users).where(users.c.id == pk))
