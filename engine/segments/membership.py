"""Keeping memberships current on every write (called from engine.changes inside the write's transaction)."""
from __future__ import annotations

from sqlalchemy import Connection, delete, select

from engine.batching import chunks
from engine.segment_models import customer_values, segment_members, static_members
from engine.segments.documents import load_customers, refresh_values
from engine.segments.evaluate import update_for_users, with_dependents, workspace_segments


def customers_changed(conn: Connection, workspace_id: int, user_pks: list[int]) -> None:
    pks = sorted(set(user_pks))
    if not pks:
        return
    loaded = load_customers(conn, pks)
    refresh_values(conn, workspace_id, pks, loaded)
    update_for_users(conn, workspace_id, workspace_segments(conn, workspace_id), pks, loaded)


def customers_erased(conn: Connection, workspace_id: int, user_pks: list[int]) -> None:
    for part in chunks(sorted(set(user_pks))):
        conn.execute(delete(customer_values).where(customer_values.c.user_pk.in_(part)))
        conn.execute(delete(segment_members).where(segment_members.c.workspace_id == workspace_id,
                                                   segment_members.c.user_pk.in_(part)))
        conn.execute(delete(static_members).where(static_members.c.workspace_id == workspace_id,
                                                  static_members.c.user_pk.in_(part)))


def events_recorded(conn: Connection, workspace_id: int, rows: list[dict]) -> None:
    """Only segments whose rules read these events (by name, or any event for recency) are checked."""
    if not rows:
        return
    pks = sorted({r["user_pk"] for r in rows})
    indexed = set()
    for part in chunks(pks):
        indexed.update(conn.execute(select(customer_values.c.user_pk).where(
            customer_values.c.user_pk.in_(part), customer_values.c.path == "user_id")).scalars())
    if len(indexed) < len(pks):  # users the events created: index them and place them in segments
        customers_changed(conn, workspace_id, [pk for pk in pks if pk not in indexed])
    all_segs = workspace_segments(conn, workspace_id)
    names = {r["name"] for r in rows}
    hit = {s.id for s in all_segs if s.events & names or (s.any_event and any(not n.startswith("_") for n in names))}
    if not hit:
        return
    update_for_users(conn, workspace_id, with_dependents(all_segs, hit), pks)


def memberships_of(conn: Connection, workspace_id: int, user_pk: int) -> list[str]:
    return list(conn.execute(select(segment_members.c.segment_id).where(
        segment_members.c.workspace_id == workspace_id, segment_members.c.user_pk == user_pk)
        .order_by(segment_members.c.segment_id)).scalars())
