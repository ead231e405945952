# Users enable these with `pytest_plugins = ["engine.journeys.testing"]` in their top-level conftest.py;
# pytest allows that only at the top level, so this sub-folder imports the fixtures instead.
from engine.journeys.testing import journey_env, journey_test  # noqa: F401

import concurrent.futures
import uuid
from pathlib import Path

import pytest
from temporalio.worker import Worker

@pytest.fixture(scope="session")
def temporal_dev(temporal_env):
    """The session's dev server (tests/conftest.py), under the name the runtime tests use."""
    return temporal_env


@pytest.fixture
def runtime_db(tmp_path):
    from engine.db import make_engine, migrate

    db = make_engine(f"sqlite:///{tmp_path / 'rt.db'}")
    migrate(db)
    yield db
    db.dispose()


@pytest.fixture
async def dev_worker(temporal_dev, runtime_db):
    """A worker on the dev server with the journey workflows and activities; yields its task queue."""
    from engine.journeys.activities import JourneyActivities
    from engine.journeys.workflows import JourneyAdmissionWorkflow, JourneyBroadcastWorkflow, JourneyCohortWorkflow

    queue = f"rt-{uuid.uuid4().hex[:8]}"
    worker = Worker(temporal_dev.client, task_queue=queue,
                    workflows=[JourneyCohortWorkflow, JourneyAdmissionWorkflow, JourneyBroadcastWorkflow],
                    activities=JourneyActivities(runtime_db).all(),
                    activity_executor=concurrent.futures.ThreadPoolExecutor(16),
                    workflow_failure_exception_types=[Exception])
    async with worker:
        yield queue
