"""What the runtime needs from segments: members page by page, membership of a batch, existence,
and the journey -> segment references (so a used segment cannot be deleted).

Reads the segments work's tables (engine.segments.tables) when they are installed. Without them,
`use_static_segments` supplies fixed memberships (tests, the journey test fixture).
"""
from __future__ import annotations

from typing import Iterable

from sqlalchemy import Connection, delete, or_, select

from engine.journeys.runtime.localtime import ZoneFilter
from engine.customers.tables import users

_STATIC: dict[tuple[int, str], list[int]] = {}


def _tables():
    try:
        from engine.segments.tables import journey_segment_refs, segment_members, segments
    except ImportError:
        return None
    return segments, segment_members, journey_segment_refs


def use_static_segments(workspace_id: int, members: dict[str, Iterable[int]]) -> None:
    """Fixed segment memberships for a workspace (takes precedence over the segments tables)."""
    for seg, pks in members.items():
        _STATIC[(workspace_id, seg)] = sorted(set(pks))


def clear_static_segments() -> None:
    _STATIC.clear()


def members_page(conn: Connection, workspace_id: int, segment_id: str, after_pk: int, limit: int,
                 zones: ZoneFilter | None = None) -> list[int]:
    """The next `limit` members after `after_pk`; with `zones`, only customers whose stored time zone
    is one of `zones.names` (or unset, when `zones.unset`), filtered in SQL."""
    if (workspace_id, segment_id) in _STATIC:
        pks = [pk for pk in _STATIC[(workspace_id, segment_id)] if pk > after_pk]
        if zones is not None:
            inside = set(conn.execute(select(users.c.id).where(users.c.workspace_id == workspace_id,
                                                               _in_zones(zones))).scalars())
            pks = [pk for pk in pks if pk in inside]
        return pks[:limit]
    t = _tables()
    if t is None:
        raise LookupError(f"segment `{segment_id}`: segments are not installed")
    m = t[1]
    q = (select(m.c.user_pk).where(m.c.workspace_id == workspace_id, m.c.segment_id == segment_id,
                                   m.c.user_pk > after_pk).order_by(m.c.user_pk).limit(limit))
    if zones is not None:
        q = q.join(users, users.c.id == m.c.user_pk).where(_in_zones(zones))
    return list(conn.execute(q).scalars())


def stored_zones(conn: Connection, workspace_id: int) -> list[str | None]:
    """The distinct `timezone` values of the workspace's customers (None = unset)."""
    return list(conn.execute(select(users.c.timezone).where(users.c.workspace_id == workspace_id).distinct()).scalars())


def _in_zones(zones: ZoneFilter):
    cond = users.c.timezone.in_(zones.names)
    return or_(cond, users.c.timezone.is_(None)) if zones.unset else cond


def members_among(conn: Connection, workspace_id: int, segment_id: str, user_pks: list[int]) -> set[int]:
    if (workspace_id, segment_id) in _STATIC:
        return set(_STATIC[(workspace_id, segment_id)]) & set(user_pks)
    t = _tables()
    if t is None:
        return set()
    from engine.platform.db import rows_where_in

    return {r[0] for r in rows_where_in(conn, t[1], ["user_pk"], "user_pk", user_pks,
                                        {"workspace_id": workspace_id, "segment_id": segment_id})}


def segment_exists(conn: Connection, workspace_id: int, segment_id: str) -> bool:
    if (workspace_id, segment_id) in _STATIC:
        return True
    t = _tables()
    if t is None:
        return True  # nothing to check against
    return conn.execute(select(t[0].c.id).where(t[0].c.workspace_id == workspace_id,
                                                t[0].c.id == segment_id)).first() is not None


def set_refs(conn: Connection, workspace_id: int, journey_id: str, segment_ids: set[str], active: bool) -> None:
    t = _tables()
    if t is None:
        return
    refs = t[2]
    conn.execute(delete(refs).where(refs.c.workspace_id == workspace_id, refs.c.journey_id == journey_id))
    for seg in sorted(segment_ids):
        conn.execute(refs.insert().values(workspace_id=workspace_id, journey_id=journey_id, segment_id=seg, active=active))
