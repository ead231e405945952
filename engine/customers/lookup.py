"""Finding customers the way a support person asks: by user id, endpoint id or address (exact)."""
from __future__ import annotations

from sqlalchemy import Engine, select

from tidings.engine.customers.tables import endpoints, users
from tidings.engine.platform.db import reading
from tidings.engine.workspaces.service import WorkspaceRef


def find_user_ids(db: Engine, workspace: WorkspaceRef, query: str, limit: int = 50) -> list[str]:
    """User ids whose user id, one of whose endpoint ids, or one of whose addresses is `query`. Asked in
    that order, stopping at the first that answers: ids are searched in their unique indexes, while
    addresses have no index and cost a scan of the workspace's endpoints."""
    query = query.strip()
    if not query:
        return []
    owner = select(users.c.user_id).join(endpoints, endpoints.c.user_pk == users.c.id).where(
        endpoints.c.workspace_id == workspace.id)
    with reading(db) as conn:
        for q in (select(users.c.user_id).where(users.c.workspace_id == workspace.id, users.c.user_id == query),
                  owner.where(endpoints.c.endpoint_id == query),
                  owner.where(endpoints.c.address == query).distinct().order_by(users.c.user_id).limit(limit)):
            found = conn.execute(q).scalars().all()
            if found:
                return list(found)
    return []
