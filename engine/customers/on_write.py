"""The one place that hears about every customer write, inside the write's own transaction.

Segment memberships are kept current from here (read-your-writes): whatever changes users,
endpoints or events calls these functions before it commits.
"""
from __future__ import annotations

from typing import Collection

from sqlalchemy import Connection


def customers_changed(conn: Connection, workspace_id: int, user_pks: list[int],
                      fields: Collection[str] | None = None) -> None:
    """Users, their endpoints or their events changed; re-evaluate what depends on them.
    `fields`: the user-level paths written, when only those changed (None: anything may have)."""
    from engine.segments import membership

    membership.customers_changed(conn, workspace_id, user_pks, fields)


def customers_erased(conn: Connection, workspace_id: int, user_pks: list[int]) -> None:
    """Users are about to be deleted; drop what refers to them."""
    from engine.segments import membership

    membership.customers_erased(conn, workspace_id, user_pks)


def memberships_of(conn: Connection, workspace_id: int, user_pk: int) -> list[str]:
    """The segment ids the user belongs to."""
    from engine.segments import membership

    return membership.memberships_of(conn, workspace_id, user_pk)


def events_recorded(conn: Connection, workspace_id: int, rows: list[dict]) -> None:
    """New events were stored (only new ids; duplicates never arrive here)."""
    from engine.journeys.runtime import entries
    from engine.messaging.ledger import index_sends
    from engine.segments import membership

    index_sends(conn, workspace_id, rows)  # message id -> its identity, for feedback and metrics
    membership.events_recorded(conn, workspace_id, rows)  # behaviour-based segments
    entries.enqueue_matching(conn, workspace_id, rows)  # event/segment-triggered journeys and goals
