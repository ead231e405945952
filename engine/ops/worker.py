"""The Temporal worker: every workflow and activity Tidings runs is registered here."""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import signal
from datetime import timedelta

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from engine.platform.config import Settings

log = logging.getLogger("tidings.worker")


def workflows() -> list[type]:
    """Workflow classes, imported lazily so the API process need not load them."""
    from engine.journeys.runtime.workflows import (
        JourneyAdmissionWorkflow, JourneyBroadcastWorkflow, JourneyCohortWorkflow,
    )
    from engine.ops.retention_workflow import PruneRetention
    from engine.segments.refresh_workflow import RefreshClockSegments

    return [RefreshClockSegments, PruneRetention, JourneyCohortWorkflow, JourneyAdmissionWorkflow, JourneyBroadcastWorkflow]


def activities(db: Engine, settings: Settings) -> list:
    """Activity callables bound to this process's database and settings."""
    from engine.journeys.runtime.activities import JourneyActivities
    from engine.ops import retention
    from engine.segments.refresh import make_activity

    return [make_activity(db), retention.make_activity(db), *JourneyActivities(db, settings).all()]


# The sandbox re-imports a workflow's module for every new workflow run, and event entry starts a cohort
# workflow every few hundred milliseconds: compiling engine/journeys/runtime/workflows.py each time (no bytecode
# cache under PYTHONDONTWRITEBYTECODE) took a sixth of the worker's CPU. The module holds no state of
# its own (a class per workflow, constants), so this worker imports it once. A passed-through module
# escapes the sandbox's checks of forbidden calls (datetime.now, I/O...): the journey tests' workers
# (tests/journeys/conftest.py, engine/journeys/testing.py) keep the full sandbox, which catches them.
PASSTHROUGH = ("engine.journeys.runtime.workflows", "engine.journeys.runtime.contracts", "engine.journeys.ir")


# Threads run the sync activities (a step's reads and writes, a broadcast page): short database work,
# bounded by the engine's connection pool (30 on PostgreSQL). Nothing waits on a thread: sends and
# admission are async, and an idle journey's admission holds neither a thread nor one of the worker's
# activity slots (Temporal's default, 100): it sleeps in its workflow until the entry watch signals it
# (engine/journeys/runtime/admission.py). Before, each idle admission long-polled in a thread, and 16 active
# journeys left the steps of every other journey waiting for a thread.
ACTIVITY_THREADS = 16


def build_worker(client: Client, db: Engine, settings: Settings, **options) -> Worker:
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    options.setdefault("workflow_runner", SandboxedWorkflowRunner(restrictions=restrictions))
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=workflows(),
        activities=activities(db, settings),
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=ACTIVITY_THREADS),
        **options,
    )


async def run_worker(client: Client, db: Engine, settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (never, without one), then shut down gracefully: no new task is polled, and
    activities in flight (a send) get `settings.shutdown_timeout` seconds to finish and record their outcome
    before they are cancelled (a cancelled send is retried by the next worker, skipping what was sent)."""
    from engine.channels import secrets as channel_secrets
    from engine.journeys.store import resume_activations
    from engine.ops import retention
    from engine.segments.refresh import ensure_schedule

    channel_secrets.announce()  # the worker sends: unusable keys stop it here, a missing key is said once
    await ensure_schedule(client, settings.task_queue)
    await retention.ensure_schedule(client, settings.task_queue)
    from engine.journeys.runtime.admission import sweep_orphans

    await resume_activations(client, db, settings.task_queue)  # activations a dead process left half-done
    worker = build_worker(client, db, settings,
                          graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_timeout))
    tune_collector()
    async with worker:
        redeliveries = asyncio.create_task(_redeliver(db), name="redelivery")
        # every worker wakes the idle journeys whose entry watch died with another worker
        sweep = asyncio.create_task(sweep_orphans(client, db), name="tidings-entry-sweep")
        try:
            await (stop or asyncio.Event()).wait()
            log.info("stopping: waiting up to %s s for activities in flight", settings.shutdown_timeout)
        finally:
            sweep.cancel()
            redeliveries.cancel()
    log.info("worker stopped")


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM (what a deploy, systemd or Kubernetes sends) and SIGINT set `stop` instead of killing."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _redeliver(db: Engine) -> None:
    """Transactional messages left `retrying` are resent by the workers when due (engine.messaging.redelivery)."""
    from engine.messaging import redelivery
    from engine.channels.config import load_plugins

    await asyncio.sleep(redelivery.EVERY)  # not during start-up (`tidings dev` serves its API on this loop)
    await redelivery.run_forever(db, await asyncio.to_thread(load_plugins))


def tune_collector() -> None:
    """Under event entry the collector's full passes stopped the event loop for 70-180 ms every ~2 s
    (measured), walking 160,000 start-up objects (Temporal, SQLAlchemy, plugins) and every in-flight
    cohort's members; each pause delayed every SMTP round trip in flight. Start-up objects live as long
    as the process: out of the collector's sight. A cohort allocates its objects together and drops them
    together, so young passes every 50,000 allocations instead of 700 (as the API does)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
