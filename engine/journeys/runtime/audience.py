"""What the runtime needs from segments, through their public functions (tidings.engine.segments.service):
members page by page (optionally by stored time zone), membership of a batch, existence, and the
journey -> segment references (so a used segment cannot be deleted)."""
from __future__ import annotations

from sqlalchemy import Connection, select

from tidings.engine.customers.tables import users
from tidings.engine.journeys.runtime.localtime import ZoneFilter
from tidings.engine.segments import service as segments
from tidings.engine.segments.service import members_among, segment_exists

__all__ = ["members_page", "members_among", "segment_exists", "set_refs", "stored_zones"]


def members_page(conn: Connection, workspace_id: int, segment_id: str, after_pk: int, limit: int,
                 zones: ZoneFilter | None = None) -> list[int]:
    """The next `limit` members after `after_pk`; with `zones`, only customers whose stored time zone
    is one of `zones.names` (or unset, when `zones.unset`), filtered in SQL."""
    if zones is None:
        return segments.member_pks(conn, workspace_id, segment_id, after_pk, limit)
    return segments.member_pks(conn, workspace_id, segment_id, after_pk, limit, timezones=zones.names,
                               or_no_timezone=zones.unset)


def stored_zones(conn: Connection, workspace_id: int) -> list[str | None]:
    """The distinct `timezone` values of the workspace's customers (None = unset)."""
    return list(conn.execute(select(users.c.timezone).where(users.c.workspace_id == workspace_id).distinct()).scalars())


def set_refs(conn: Connection, workspace_id: int, journey_id: str, segment_ids: set[str], active: bool) -> None:
    segments.set_journey_refs(conn, workspace_id, journey_id, segment_ids, active)
