"""Access keys of the Pinpoint-compatible API: an AWS-style key id and secret, for one workspace or (admin)
for all of them.

SigV4 needs the secret itself to recompute a signature, so it cannot be hashed like a bearer key: it is
stored sealed. Sealing belongs to the channel-secret keyring (tidings.engine.channels.secrets, a layer above this
one), so callers hand in `seal` and open what `find_access_key` returns themselves.
"""
from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import reading
from tidings.engine.workspaces.service import WorkspaceRef, ensure_workspace
from tidings.engine.workspaces.tables import access_keys, workspaces

# AWS key ids are 20 upper-case letters and digits starting with a 4-letter kind ("AKIA"); ours say Tidings.
ACCESS_KEY_PREFIX = "TDGS"
_ID_ALPHABET = string.ascii_uppercase + "234567"
ADMIN = "*"  # how `keys list` shows the workspace of an admin key


@dataclass(frozen=True)
class AccessKey:
    workspace: WorkspaceRef | None  # None: an admin key
    access_key_id: str
    sealed_secret: str

    @property
    def admin(self) -> bool:
        return self.workspace is None


def create_access_key(db: Engine, workspace_name: str | None, seal: Callable[[str], str],
                      label: str = "") -> tuple[WorkspaceRef | None, str, str]:
    """A key pair for the workspace `workspace_name` (created if needed), or an admin key pair when it is None; returns
    (workspace, key id, secret). The secret is shown once: only its sealed form is stored."""
    key_id = ACCESS_KEY_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
    secret = secrets.token_urlsafe(30)  # 40 characters, like an AWS secret access key
    sealed = seal(secret)  # before anything is written: no key pair exists that cannot be verified
    workspace = ensure_workspace(db, workspace_name) if workspace_name is not None else None
    with db.begin() as conn:
        conn.execute(insert(access_keys).values(workspace_id=workspace.id if workspace else None, admin=workspace is None,
                                                access_key_id=key_id, sealed_secret=sealed, label=label,
                                                created_at=now_ms()))
    return workspace, key_id, secret


def find_access_key(db: Engine, access_key_id: str) -> AccessKey | None:
    """The live key with this id, or None (unknown and revoked keys look the same to a caller)."""
    with reading(db) as conn:
        row = conn.execute(
            select(access_keys.c.sealed_secret, access_keys.c.admin, workspaces.c.id, workspaces.c.name)
            .outerjoin(workspaces, workspaces.c.id == access_keys.c.workspace_id)
            .where(access_keys.c.access_key_id == access_key_id, access_keys.c.revoked_at.is_(None))
        ).first()
    if row is None or (not row.admin and row.id is None):
        return None
    return AccessKey(None if row.admin else WorkspaceRef(row.id, row.name), access_key_id, row.sealed_secret)


def list_access_keys(db: Engine, workspace: str | None = None) -> list[dict]:
    q = (
        select(access_keys.c.access_key_id.label("prefix"), access_keys.c.label, access_keys.c.created_at,
               access_keys.c.revoked_at, access_keys.c.admin, workspaces.c.name)
        .outerjoin(workspaces, workspaces.c.id == access_keys.c.workspace_id)
        .order_by(access_keys.c.id)
    )
    if workspace:
        q = q.where(workspaces.c.name == workspace)
    with reading(db) as conn:
        return [{**r._mapping, "name": ADMIN if r.admin else r.name} for r in conn.execute(q)]


def revoke_access_keys(db: Engine, access_key_id: str) -> int:
    """Revoke the live key with this id (the id is public, as `keys list` shows it whole)."""
    with db.begin() as conn:
        return conn.execute(
            update(access_keys).where(access_keys.c.access_key_id == access_key_id, access_keys.c.revoked_at.is_(None))
            .values(revoked_at=now_ms())
        ).rowcount
