"""A pooled PostgreSQL connection the server closed is replaced at checkout, without a ping per checkout
(tidings.engine.platform.db: the socket of an idle connection has nothing to read unless the server closed it)."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tidings.engine.platform.db import make_engine, migrate, reading, reading_statements, writing
from tidings.engine.workspaces.service import authenticate, create_key


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_requests_go_on_after_the_server_ends_the_pooled_connections(database_url):
    db = make_engine(database_url)
    admin = make_engine(database_url)
    try:
        migrate(db)
        workspace, key = create_key(db, "acme")
        pids = set()
        with reading(db) as a, reading_statements(db) as b:  # two pooled connections
            pids = {a.execute(text("SELECT pg_backend_pid()")).scalar(), b.execute(text("SELECT pg_backend_pid()")).scalar()}
        with admin.connect() as conn:
            for pid in pids:
                assert conn.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid}).scalar() is True
        # (the terminations waited for the backends to end: a restart closes them before the next request)
        # every way in gets a live connection: the key guard, a read, a write
        assert authenticate(db, f"Bearer {key}").id == workspace.id
        with reading_statements(db) as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() not in pids
        with writing(db) as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() not in pids
    finally:
        db.dispose()
        admin.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_live_pooled_connection_is_reused(database_url):
    db = make_engine(database_url)
    try:
        with reading(db) as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with reading(db) as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == first
    finally:
        db.dispose()


def test_autocommit_reads_see_what_was_committed_and_leave_no_transaction_open(database_url):
    db = make_engine(database_url)
    try:
        migrate(db)
        workspace, _ = create_key(db, "acme")
        with reading_statements(db) as conn:
            assert conn.execute(text("SELECT name FROM workspace WHERE id = :i"), {"i": workspace.id}).scalar() == "acme"
        with writing(db) as conn:
            conn.execute(text("UPDATE workspace SET name = 'globex' WHERE id = :i"), {"i": workspace.id})
        with reading_statements(db) as conn:
            assert conn.execute(text("SELECT name FROM workspace WHERE id = :i"), {"i": workspace.id}).scalar() == "globex"
        with reading(db) as conn:  # the connection went back to the pool out of autocommit: writes roll back
            if db.dialect.name == "postgresql":
                assert conn.connection.driver_connection.autocommit is False
    finally:
        db.dispose()
