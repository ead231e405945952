"""What a signed-in browser session holds instead of the key itself: the key's hash, checked on every
request, so a revoked key ends its sessions at once."""
from __future__ import annotations

from sqlalchemy import Engine

from tidings.engine.platform.db import reading
from tidings.engine.platform.errors import Unauthorized
from tidings.engine.workspaces.service import WorkspaceRef, _hash, _key_lookup


def key_hash(key: str) -> str:
    return _hash(key.strip())


def workspace_of_key_hash(db: Engine, hashed: str) -> WorkspaceRef:
    """The workspace of a live key given by its hash; Unauthorized for an unknown or revoked one."""
    with reading(db) as conn:
        row = conn.exec_driver_sql(_key_lookup(conn.dialect.paramstyle), (hashed,)).first()
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return WorkspaceRef(row.id, row.name)
