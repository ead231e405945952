# Users enable these with `pytest_plugins = ["tidings.engine.journeys.testing"]` in their top-level conftest.py;
# pytest allows that only at the top level, so this sub-folder imports the fixtures instead.
from tidings.engine.journeys.testing import journey_env, journey_test  # noqa: F401
from tests.messaging.conftest import smtp_sink  # noqa: F401  (a real aiosmtpd server on loopback)

import concurrent.futures
import uuid

import pytest
from temporalio.worker import Worker

@pytest.fixture(scope="session")
def temporal_dev(temporal_env):
    """The session's dev server (tests/conftest.py), under the name the runtime tests use."""
    return temporal_env


@pytest.fixture
def runtime_db(database_url):
    """SQLite, and PostgreSQL too when TIDINGS_TEST_POSTGRES_URL is set (tests/conftest.py)."""
    from tidings.engine.platform.db import make_engine, migrate

    db = make_engine(database_url)
    db.test_url = database_url  # for worker subprocesses
    migrate(db)
    yield db
    db.dispose()


def add_customers(db, workspace, user_ids, *, channel="EMAIL", address="{}@example.com") -> list[int]:
    """Customers with one endpoint each, through the endpoints batch write; returns their user_pks in order."""
    from sqlalchemy import select

    from tidings.engine.customers.endpoints import upsert_endpoints
    from tidings.engine.customers.tables import users
    from tidings.engine.customers.schemas import EndpointBatchItem

    user_ids = list(user_ids)
    for i in range(0, len(user_ids), 100):
        upsert_endpoints(db, workspace, [EndpointBatchItem(endpoint_id=f"{u}-{channel.lower()}", channel=channel, user_id=u,
                                                    address=address.format(u)) for u in user_ids[i:i + 100]])
    with db.connect() as conn:
        pks = dict(conn.execute(select(users.c.user_id, users.c.id).where(users.c.workspace_id == workspace.id)).all())
    return [pks[u] for u in user_ids]


def put_template(db, workspace, template_id="t", channel="EMAIL"):
    from tidings.engine.messaging.template_store import TemplateBody, put_template as put

    parts = {"subject": "Hi {{ user.user_id }}", "text": "Hello {{ user.user_id }}"} if channel == "EMAIL" \
        else {"body": "Hi {{ user.user_id }}"}
    put(db, workspace, template_id, TemplateBody(channel=channel, **parts))


@pytest.fixture
async def dev_worker(temporal_dev, runtime_db):
    """A worker on the dev server with the journey workflows and activities; yields its task queue."""
    from tidings.engine.journeys.runtime.activities import JourneyActivities
    from tidings.engine.journeys.runtime.workflows import (
        JourneyAdmissionWorkflow, JourneyBroadcastWorkflow, JourneyCohortWorkflow,
    )

    queue = f"rt-{uuid.uuid4().hex[:8]}"
    worker = Worker(temporal_dev.client, task_queue=queue,
                    workflows=[JourneyCohortWorkflow, JourneyAdmissionWorkflow, JourneyBroadcastWorkflow],
                    activities=JourneyActivities(runtime_db).all(),
                    activity_executor=concurrent.futures.ThreadPoolExecutor(16),
                    workflow_failure_exception_types=[Exception])
    async with worker:
        yield queue
