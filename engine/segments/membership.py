"""Keeping memberships current on every write (registered on tidings.engine.customers.on_write by tidings.engine.wiring;
called inside the write's transaction).

A write only pays for what reads it: segments whose rules read none of the written fields are not
re-checked, and the typed index is rewritten only when it holds a written path.
"""
from __future__ import annotations

from typing import Collection

from sqlalchemy import Connection, bindparam, delete, inspect, select

from tidings.engine.customers.on_write import HeldEndpoints, HeldUsers
from tidings.engine.platform.batching import chunks
from tidings.engine.segments.tables import customer_values, segment_members, static_members
from tidings.engine.segments import backfill, typed_index as paths
from tidings.engine.segments.documents import load_customers, refresh_values
from tidings.engine.segments.evaluate import update_for_users, with_dependents, workspace_rules


def customers_changed(conn: Connection, workspace_id: int, user_pks: list[int],
                      fields: Collection[str] | None = None, users: HeldUsers | None = None,
                      endpoints: HeldEndpoints | None = None) -> dict[int, list[str]] | None:
    """`fields`: the user-level paths the write changed (attributes.X, metrics.X, timezone, locale), when
    only those changed on existing users; None when anything may have (new users, endpoints, imports).
    `users` / `endpoints`: what the write holds (on_write.customers_changed), not read again. Returns the
    users' segment ids after the write when it re-checked them (None when it had no reason to read them)."""
    pks = sorted(set(user_pks))
    if not pks:
        return None
    backfill.write_guard(conn, workspace_id)
    ws_rules = workspace_rules(conn, workspace_id)
    segs = ws_rules.segs
    if not segs:
        return None
    if fields is not None:
        fields = set(fields)
        segs = with_dependents(segs, ws_rules.reading(fields))
        reindex = bool(ws_rules.user_paths & fields)
    else:
        reindex = bool(ws_rules.user_paths or ws_rules.ep_paths)
    if not segs and not reindex:
        return None
    loaded = load_customers(conn, pks, users, endpoints)
    if reindex:
        refresh_values(conn, workspace_id, pks, loaded, ws_rules.user_paths, ws_rules.ep_paths, ws_rules.slots)
    if not segs:
        return None
    after = update_for_users(conn, workspace_id, segs, pks, loaded, plan=ws_rules.plan(segs))
    return after if all(pk in after for pk in pks) else None


def customers_erased(conn: Connection, workspace_id: int, user_pks: list[int]) -> None:
    backfill.write_guard(conn, workspace_id)
    wide = paths.wide_table(workspace_id)
    has_wide = inspect(conn).has_table(wide)
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    for part in chunks(sorted(set(user_pks))):
        if has_wide:
            conn.exec_driver_sql(f"DELETE FROM {wide} WHERE user_pk IN ({', '.join([mark] * len(part))})", tuple(part))
        conn.execute(delete(customer_values).where(customer_values.c.user_pk.in_(part)))
        conn.execute(delete(segment_members).where(segment_members.c.workspace_id == workspace_id,
                                                   segment_members.c.user_pk.in_(part)))
        conn.execute(delete(static_members).where(static_members.c.workspace_id == workspace_id,
                                                  static_members.c.user_pk.in_(part)))


def events_recorded(conn: Connection, workspace_id: int, rows: list[dict]) -> None:
    """Only segments whose rules read these events (by name, or any event for recency) are checked.
    (Users the events created were placed by customers_changed before this.)"""
    if not rows:
        return
    backfill.write_guard(conn, workspace_id)
    ws_rules = workspace_rules(conn, workspace_id)
    all_segs = ws_rules.segs
    names = {r["name"] for r in rows}
    hit = {s.id for s in all_segs if s.events & names or (s.any_event and any(not n.startswith("_") for n in names))}
    if not hit:
        return
    segs = with_dependents(all_segs, hit)
    update_for_users(conn, workspace_id, segs, sorted({r["user_pk"] for r in rows}), plan=ws_rules.plan(segs))


# Built once (every user's page and every single upsert reads it): its compiled form is cached.
_MEMBERSHIPS_OF = select(segment_members.c.segment_id).where(
    segment_members.c.workspace_id == bindparam("workspace_id"),
    segment_members.c.user_pk == bindparam("user_pk")).order_by(segment_members.c.segment_id)


def memberships_of(conn: Connection, workspace_id: int, user_pk: int) -> list[str]:
    return list(conn.execute(_MEMBERSHIPS_OF, {"workspace_id": workspace_id, "user_pk": user_pk}).scalars())
