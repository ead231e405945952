"""PostgreSQL: a backfill batch of one Tidings schema holds its workspace's lock against that schema's customer
writes only. Advisory locks are per database, so without the schema in the key a 1M-customer backfill in one
schema (workspace 1) stalled every customer write of workspace 1 in every other schema on the same server."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, text

from tidings.engine.customers import users as customers
from tidings.engine.customers.schemas import UserBatchItem
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.segments import backfill
from tidings.engine.workspaces.service import ensure_workspace


def _write_in_thread(db, workspace, user_id: str) -> threading.Thread:
    def write() -> None:
        customers.upsert_users(db, workspace, [UserBatchItem(user_id=user_id, attributes={"plan": "pro"})])

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_backfill_batch_holds_up_writes_of_its_own_schema_only(database_url):
    here = make_engine(database_url)
    base = database_url.split("?")[0]
    other_schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {other_schema}"))
    there = make_engine(f"{base}?options=-csearch_path%3D{other_schema}")
    try:
        for db in (here, there):
            migrate(db)
        ours, theirs = ensure_workspace(here, "acme"), ensure_workspace(there, "acme")
        assert ours.id == theirs.id  # the same workspace id in both schemas: what used to share a lock
        batch = here.connect()
        try:
            batch.begin()
            backfill.exclusive(batch, ours.id)  # as a backfill batch holds it
            elsewhere = _write_in_thread(there, theirs, "ann")
            same = _write_in_thread(here, ours, "bob")
            elsewhere.join(10)
            assert not elsewhere.is_alive(), "a write in another schema waited for this schema's backfill"
            time.sleep(0.5)
            assert same.is_alive()  # a write to the workspace being filled still waits for the batch
        finally:
            batch.close()  # ends the batch's transaction (and its lock) whatever happened
        same.join(30)
        assert not same.is_alive()
        with there.connect() as conn:
            assert conn.execute(text("SELECT user_id FROM users")).scalars().all() == ["ann"]
    finally:
        here.dispose()
        there.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {other_schema} CASCADE"))
        admin.dispose()
