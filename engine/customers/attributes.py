"""Merging attribute/metric patches and keeping the workspace's registry of custom names."""
from __future__ import annotations

from typing import Any, Collection, Iterable

from sqlalchemy import Connection, bindparam, func, select

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


# Built once (every single upsert asks): building a statement per call cost more than running it.
_KNOWN_AMONG = select(attribute_names.c.name).where(
    attribute_names.c.workspace_id == bindparam("workspace_id"), attribute_names.c.kind == bindparam("kind"),
    attribute_names.c.name.in_(bindparam("names", expanding=True)))
_ALL_KNOWN = select(attribute_names.c.name).where(
    attribute_names.c.workspace_id == bindparam("workspace_id"), attribute_names.c.kind == bindparam("kind"))
_HOW_MANY = select(func.count()).select_from(attribute_names).where(
    attribute_names.c.workspace_id == bindparam("workspace_id"), attribute_names.c.kind == bindparam("kind"))


def register_names(conn: Connection, workspace_id: int, kind: str, names: Iterable[str],
                   known_among: Collection[str] | None = None) -> None:
    """Record new custom names of one kind; refuse the write when it would pass Pinpoint's limit. Only the
    names written are looked up (a write of known names reads a few index entries, not the whole registry);
    the registry is counted only when some are new. `known_among`: which of `names` the registry holds, when
    the caller looked (known_names_query, read together with the write's other reads)."""
    wanted = set(names)
    if not wanted:
        return
    params = {"workspace_id": workspace_id, "kind": kind}
    if known_among is not None and len(wanted) <= MAX_ATTRIBUTE_NAMES:
        new = wanted - set(known_among)
    elif len(wanted) <= MAX_ATTRIBUTE_NAMES:
        new = wanted - set(conn.execute(_KNOWN_AMONG, {**params, "names": sorted(wanted)}).scalars())
    else:  # past the limit whatever is known; the registry (at most the limit) is read whole for the message
        new = wanted - set(conn.execute(_ALL_KNOWN, params).scalars())
    if not new:
        return
    known = conn.execute(_HOW_MANY, params).scalar_one()
    if known + len(new) > MAX_ATTRIBUTE_NAMES:
        raise LimitExceeded(
            f"a workspace has at most {MAX_ATTRIBUTE_NAMES} custom {kind} names; "
            f"{known} exist and this write adds {len(new)} ({', '.join(sorted(new)[:5])}...)",
            field=kind,
        )
    stmt = insert_ignoring_conflicts(conn, attribute_names, ["workspace_id", "kind", "name"])
    conn.execute(stmt, [{"workspace_id": workspace_id, "kind": kind, "name": n} for n in sorted(new)])


def register_item_names(conn: Connection, workspace_id: int, items: Iterable[Any]) -> None:
    """The custom attribute and metric names a batch of users or endpoints writes."""
    items = list(items)
    register_names(conn, workspace_id, "attribute", {k for i in items for k in i.attributes})
    register_names(conn, workspace_id, "metric", {k for i in items for k in i.metrics})


def known_names_query(dialect: str, workspace_id: int, attributes: Collection[str],
                      metrics: Collection[str]) -> tuple[str, tuple] | None:
    """A plain read of which of these attribute and metric names the registry holds: (kind, name) rows.
    None when there is nothing to look up, or more than the limit (register_names reads the registry)."""
    if not attributes and not metrics or max(len(attributes), len(metrics)) > MAX_ATTRIBUTE_NAMES:
        return None
    mark = "%s" if dialect == "postgresql" else "?"
    names = sorted(set(attributes) | set(metrics))
    return (f"SELECT kind, name FROM {attribute_names.name} WHERE workspace_id = {mark} AND kind IN ({mark}, {mark})"
            f" AND name IN ({', '.join([mark] * len(names))})", (workspace_id, "attribute", "metric", *names))
