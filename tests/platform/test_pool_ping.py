"""A pooled PostgreSQL connection the server dropped is not handed to a request after it sat idle: the pool
pings connections idle for more than db.PING_AFTER_IDLE_S at checkout (not every checkout: that was a round
trip per request) and replaces one that fails."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from tidings.engine.platform import db as dbmod
from tidings.engine.platform.db import make_engine, reading


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_dropped_idle_connection_is_replaced_before_a_request_uses_it(database_url):
    engine = make_engine(database_url)
    admin = make_engine(database_url)
    try:
        with reading(engine) as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as conn:  # the server drops the pooled connection (as a restart would)
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
        time.sleep(dbmod.PING_AFTER_IDLE_S + 0.2)
        with reading(engine) as conn:
            again = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert again != first
    finally:
        engine.dispose()
        admin.dispose()
