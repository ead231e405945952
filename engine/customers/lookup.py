"""Finding customers the way a support person asks: by user id, endpoint id or address (exact)."""
from __future__ import annotations

from sqlalchemy import Engine, or_, select

from engine.customers.tables import endpoints, users
from engine.platform.db import reading
from engine.workspaces.service import WorkspaceRef


def find_user_ids(db: Engine, ws: WorkspaceRef, query: str, limit: int = 50) -> list[str]:
    """User ids whose user id, one of whose endpoint ids, or one of whose addresses is `query`."""
    query = query.strip()
    if not query:
        return []
    with reading(db) as conn:
        direct = conn.execute(select(users.c.user_id).where(users.c.workspace_id == ws.id,
                                                            users.c.user_id == query)).scalars().all()
        via_endpoint = conn.execute(
            select(users.c.user_id).join(endpoints, endpoints.c.user_pk == users.c.id)
            .where(endpoints.c.workspace_id == ws.id,
                   or_(endpoints.c.endpoint_id == query, endpoints.c.address == query))
            .order_by(users.c.user_id).limit(limit)).scalars().all()
    return list(dict.fromkeys([*direct, *via_endpoint]))[:limit]
