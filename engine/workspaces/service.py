"""Workspaces and their API keys. Keys are random, shown once, and stored only as SHA-256 hashes."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, MetaData, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import reading, writing
from tidings.engine.platform.errors import Conflict, NotFound, Unauthorized
from tidings.engine.workspaces.tables import api_keys, workspaces

KEY_PREFIX = "tk_"


@dataclass(frozen=True)
class WorkspaceRef:
    id: int
    name: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def ensure_workspace(db: Engine, name: str) -> WorkspaceRef:
    with writing(db) as conn:
        row = conn.execute(select(workspaces.c.id).where(workspaces.c.name == name)).first()
        if row is None:
            workspace_id = conn.execute(insert(workspaces).values(name=name, created_at=now_ms())).inserted_primary_key[0]
        else:
            workspace_id = row.id
    return WorkspaceRef(workspace_id, name)


def find_workspace(db: Engine, name: str) -> WorkspaceRef:
    """An existing workspace by name; NotFound (naming how to create it) when there is none."""
    with reading(db) as conn:
        workspace_id = conn.execute(select(workspaces.c.id).where(workspaces.c.name == name)).scalar()
    if workspace_id is None:
        raise NotFound(f"no workspace {name!r} (create one with: tidings keys create --workspace {name})",
                       field="workspace")
    return WorkspaceRef(workspace_id, name)


def create_key(db: Engine, workspace_name: str, label: str = "") -> tuple[WorkspaceRef, str]:
    """Create the workspace if needed and a new key for it; the key is returned once, never stored."""
    workspace = ensure_workspace(db, workspace_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with writing(db) as conn:
        conn.execute(
            insert(api_keys).values(
                workspace_id=workspace.id, prefix=key[:11], key_hash=_hash(key), label=label, created_at=now_ms()
            )
        )
    return workspace, key


def list_keys(db: Engine, workspace: str | None = None) -> list[dict]:
    q = (
        select(api_keys.c.prefix, api_keys.c.label, api_keys.c.created_at, api_keys.c.revoked_at, workspaces.c.name)
        .join(workspaces, workspaces.c.id == api_keys.c.workspace_id)
        .order_by(api_keys.c.id)
    )
    if workspace:
        q = q.where(workspaces.c.name == workspace)
    with reading(db) as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def revoke_key(db: Engine, prefix: str, workspace_id: int | None = None) -> int:
    """Revoke every live key whose visible prefix (as `keys list` shows it) or full value matches; only
    the workspace's own keys when `workspace_id` is given (the console: no session revokes another's)."""
    with writing(db) as conn:
        cond = (api_keys.c.prefix == prefix) | (api_keys.c.key_hash == _hash(prefix))
        if workspace_id is not None:
            cond = cond & (api_keys.c.workspace_id == workspace_id)
        n = conn.execute(
            update(api_keys).where(cond, api_keys.c.revoked_at.is_(None)).values(revoked_at=now_ms())
        ).rowcount
    if not n:
        raise NotFound(f"no live key matches {prefix!r}", field="key")
    return n


def _key_lookup(paramstyle: str) -> str:
    mark = "?" if paramstyle == "qmark" else "%s"
    return (f"SELECT w.id, w.name FROM {workspaces.name} w JOIN {api_keys.name} k ON k.workspace_id = w.id "
            f"WHERE k.key_hash = {mark} AND k.revoked_at IS NULL")


def _live_key(db: Engine, key_hash: str) -> tuple[int, str] | None:
    """The workspace of a live key, read on every request (a revoked key is refused at its next call).

    Plain SQL on the pooled driver connection, outside any transaction: the guard runs it for every request,
    and SQLAlchemy's connection, transaction and result layers cost more than this indexed read. SQLite's
    driver connections are in autocommit already (tidings.engine.platform.db); a PostgreSQL one is put in
    autocommit for this single statement, which saves its BEGIN and ROLLBACK round trips."""
    raw = db.raw_connection()
    try:
        driver = raw.driver_connection
        autocommit_here = db.dialect.name == "postgresql" and not driver.autocommit
        if autocommit_here:
            driver.autocommit = True
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(_key_lookup(db.dialect.paramstyle), (key_hash,))
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            if autocommit_here:
                driver.autocommit = False
    finally:
        raw.close()  # back to the pool
    return None if row is None else (row[0], row[1])


def authenticate(db: Engine, authorization: str | None) -> WorkspaceRef:
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("send 'Authorization: Bearer <workspace key>'")
    key = authorization.removeprefix("Bearer ").strip()
    row = _live_key(db, _hash(key))
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return WorkspaceRef(*row)


def created_at(db: Engine, workspace: WorkspaceRef) -> int:
    """When the workspace was created (epoch ms): Pinpoint's CreationDate of the application it stands for."""
    with reading(db) as conn:
        return conn.execute(select(workspaces.c.created_at).where(workspaces.c.id == workspace.id)).scalar_one()


def list_workspaces(db: Engine) -> list[WorkspaceRef]:
    with reading(db) as conn:
        return [WorkspaceRef(r.id, r.name) for r in conn.execute(
            select(workspaces.c.id, workspaces.c.name).order_by(workspaces.c.id))]


def create_workspace(db: Engine, name: str, tags: dict[str, str] | None = None) -> WorkspaceRef:
    """A new workspace; Conflict when the name is taken (names are the workspaces' ids). `tags` are its own
    (tidings.engine.workspaces.tags, resource "app"), stored in the same transaction."""
    from tidings.engine.workspaces.tags import add_tags

    try:
        with writing(db) as conn:
            workspace_id = conn.execute(insert(workspaces).values(name=name, created_at=now_ms())).inserted_primary_key[0]
            if tags:
                add_tags(conn, workspace_id, "app", tags)
    except IntegrityError:  # the name's unique constraint: taken, perhaps a moment ago by another request
        raise Conflict(f"a workspace named {name!r} exists", field="name") from None
    return WorkspaceRef(workspace_id, name)


def delete_workspace(db: Engine, workspace: WorkspaceRef) -> dict[str, int]:
    """Delete the workspace and every row of it, in one transaction: customers, events, segments, journeys,
    messages, channels, streams, jobs, and its keys (which stop working with it). Returns the rows deleted per
    table. The tables are read from the database itself (every table with a `workspace_id` column, children
    before their parents), so a domain's table is never left behind because its module was not imported;
    admin keys (no workspace) are kept. Stopping the workspace's journeys on Temporal is the caller's part
    (tidings.engine.journeys.store.stop_all), before this."""
    deleted: dict[str, int] = {}
    with writing(db) as conn:
        meta = MetaData()
        meta.reflect(bind=conn)
        tables = [t for t in reversed(meta.sorted_tables) if t.name != workspaces.name and "workspace_id" in t.c]
        # twice: a table kept by triggers (journey_step_tally, from journey_run) gets rows back from deletes made
        # after it was emptied; the second pass finds only those
        for table in tables + tables:
            n = conn.execute(delete(table).where(table.c.workspace_id == workspace.id)).rowcount
            if n:
                deleted[table.name] = deleted.get(table.name, 0) + n
        if not conn.execute(delete(workspaces).where(workspaces.c.id == workspace.id)).rowcount:
            raise NotFound(f"no workspace {workspace.name!r}", field="workspace")  # deleted a moment ago by another
    return deleted
