"""The Temporal worker: every workflow and activity Tidings runs is registered here."""
from __future__ import annotations

import concurrent.futures
import logging

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from engine.config import Settings

log = logging.getLogger("tidings.worker")


def workflows() -> list[type]:
    """Workflow classes, imported lazily so the API process need not load them."""
    from engine.journeys.workflows import JourneyAdmissionWorkflow, JourneyBroadcastWorkflow, JourneyCohortWorkflow
    from engine.segments.clock_workflow import RefreshClockSegments

    return [RefreshClockSegments, JourneyCohortWorkflow, JourneyAdmissionWorkflow, JourneyBroadcastWorkflow]


def activities(db: Engine, settings: Settings) -> list:
    """Activity callables bound to this process's database and settings."""
    from engine.journeys.activities import JourneyActivities
    from engine.segments.clock import make_activity

    return [make_activity(db), *JourneyActivities(db, settings).all()]


def build_worker(client: Client, db: Engine, settings: Settings, **options) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=workflows(),
        activities=activities(db, settings),
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=16),
        **options,
    )


async def run_worker(client: Client, db: Engine, settings: Settings) -> None:
    from engine import channel_secrets
    from engine.segments.clock import ensure_schedule

    channel_secrets.announce()  # the worker sends: unusable keys stop it here, a missing key is said once
    await ensure_schedule(client, settings.task_queue)
    await build_worker(client, db, settings).run()
