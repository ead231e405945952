"""Merging attribute/metric patches and keeping the workspace's registry of custom names."""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import Connection, select

from tidings.engine.platform.db import insert_ignoring_conflicts
from tidings.engine.platform.errors import LimitExceeded
from tidings.engine.customers.tables import attribute_names
from tidings.engine.customers.limits import MAX_ATTRIBUTE_NAMES


def merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Keys sent as null are removed, keys not sent are kept (Pinpoint's UpdateEndpoint semantics)."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def register_names(conn: Connection, workspace_id: int, kind: str, names: Iterable[str]) -> None:
    """Record new custom names of one kind; refuse the write when it would pass Pinpoint's limit."""
    wanted = set(names)
    if not wanted:
        return
    known = set(
        conn.execute(
            select(attribute_names.c.name).where(
                attribute_names.c.workspace_id == workspace_id, attribute_names.c.kind == kind
            )
        ).scalars()
    )
    new = wanted - known
    if not new:
        return
    if len(known) + len(new) > MAX_ATTRIBUTE_NAMES:
        raise LimitExceeded(
            f"a workspace has at most {MAX_ATTRIBUTE_NAMES} custom {kind} names; "
            f"{len(known)} exist and this write adds {len(new)} ({', '.join(sorted(new)[:5])}...)",
            field=kind,
        )
    stmt = insert_ignoring_conflicts(conn, attribute_names, ["workspace_id", "kind", "name"])
    conn.execute(stmt, [{"workspace_id": workspace_id, "kind": kind, "name": n} for n in sorted(new)])


def register_item_names(conn: Connection, workspace_id: int, items: Iterable[Any]) -> None:
    """The custom attribute and metric names a batch of users or endpoints writes."""
    items = list(items)
    register_names(conn, workspace_id, "attribute", {k for i in items for k in i.attributes})
    register_names(conn, workspace_id, "metric", {k for i in items for k in i.metrics})
