"""A real API (uvicorn on a loopback port, in a thread) and real boto3 `pinpoint` clients signed with key pairs
made by the same code as `tidings keys create --pinpoint`."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass

import boto3
import pytest
import uvicorn
from botocore.config import Config

from tidings.api.app import create_app
from tidings.engine.channels.secrets import keyring
from tidings.engine.ops.worker import build_workers
from tidings.engine.platform.config import Settings
from tidings.engine.platform.db import make_engine
from tidings.engine.workspaces.access_keys import create_access_key

REGION = "us-east-1"


@dataclass
class RunningApi:
    url: str
    database_url: str

    @property
    def pinpoint_url(self) -> str:
        return self.url + "/pinpoint"


def temporal_settings(tmp_path, database_url: str, temporal_env) -> Settings:
    """Settings of an API (and worker) reaching the session's Temporal dev server, on a task queue of the test's
    own. Test files whose journeys send define `settings` with this, after the fixtures whose settings come first
    (the SMTP sink's)."""
    return Settings.from_env(TIDINGS_HOME=str(tmp_path / "home"), TIDINGS_DATABASE_URL=database_url,
                             TIDINGS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
                             TIDINGS_TASK_QUEUE=f"pp-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def worker(settings, temporal_env, running_api):
    """The main queue's worker and the send queue's, as `tidings worker` runs them (journeys activated by the
    API put their sends on the send queue); yields the worker's database engine."""
    db = make_engine(settings.database_url)
    main, sends = build_workers(temporal_env.client, db, settings, workflow_failure_exception_types=[Exception])
    async with main, sends:
        yield db
    db.dispose()


@pytest.fixture
def running_api(settings):
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield RunningApi(f"http://127.0.0.1:{port}", settings.database_url)
    server.should_exit = True
    thread.join(timeout=30)


@dataclass
class KeyPair:
    workspace: str | None  # None: an admin key
    access_key_id: str
    secret: str


def schedule_of(running_api, temporal_env, journey_id: str, version: int = 1):
    """The Temporal schedule of a recurring journey's version in the acme workspace."""
    from tidings.engine.journeys.runtime.contracts import schedule_id
    from tidings.engine.platform.installation import installation_id
    from tidings.engine.workspaces.service import find_workspace

    db = make_engine(running_api.database_url)
    try:
        return temporal_env.client.get_schedule_handle(schedule_id(
            installation_id(db), find_workspace(db, "acme").id, journey_id, version))
    finally:
        db.dispose()


def make_key(database_url: str, workspace_name: str | None) -> KeyPair:
    db = make_engine(database_url)
    try:
        workspace, key_id, secret = create_access_key(db, workspace_name, keyring().seal)
    finally:
        db.dispose()
    return KeyPair(workspace.name if workspace else None, key_id, secret)


def client_for(api: RunningApi, key: KeyPair, secret: str | None = None):
    """An unchanged boto3 client; only endpoint_url points at Tidings. No retries: a test sees each answer."""
    return boto3.session.Session().client(
        "pinpoint", endpoint_url=api.pinpoint_url, region_name=REGION, aws_access_key_id=key.access_key_id,
        aws_secret_access_key=secret or key.secret, config=Config(retries={"max_attempts": 1, "mode": "standard"}))


@pytest.fixture
def acme_key(running_api) -> KeyPair:
    return make_key(running_api.database_url, "acme")


@pytest.fixture
def pinpoint(running_api, acme_key):
    return client_for(running_api, acme_key)


@pytest.fixture
def native(running_api, acme_key):
    """An httpx client of the native /v1 API with a bearer key of the same workspace as `pinpoint`."""
    import httpx

    from tidings.engine.workspaces.service import create_key

    db = make_engine(running_api.database_url)
    _, key = create_key(db, "acme")
    db.dispose()
    with httpx.Client(base_url=running_api.url, headers={"Authorization": f"Bearer {key}"}) as client:
        yield client
