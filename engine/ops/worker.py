"""The Temporal worker: every workflow and activity Tidings runs is registered here."""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from typing import Any, Callable
from datetime import timedelta

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from tidings.engine.platform.collector import collect_forever, tune_collector
from tidings.engine.platform.config import Settings
from tidings.engine.wiring import wire

log = logging.getLogger("tidings.worker")


def workflows() -> list[type]:
    """Workflow classes, imported lazily so the API process need not load them."""
    from tidings.engine.journeys.runtime.workflows import (
        JourneyAdmissionWorkflow, JourneyBroadcastWorkflow, JourneyCohortWorkflow,
    )
    from tidings.engine.ops.retention_workflow import PruneRetention
    from tidings.engine.segments.refresh_workflow import RefreshClockSegments

    return [RefreshClockSegments, PruneRetention, JourneyCohortWorkflow, JourneyAdmissionWorkflow, JourneyBroadcastWorkflow]


def activities(db: Engine, settings: Settings, journey=None) -> list:
    """Activity callables bound to this process's database and settings."""
    from tidings.engine.journeys.runtime.activities import JourneyActivities
    from tidings.engine.ops import retention
    from tidings.engine.segments.refresh import make_activity

    journey = journey or JourneyActivities(db, settings)
    return [make_activity(db), retention.make_activity(db), *journey.all()]


# The sandbox re-imports a workflow's module for every new workflow run, and event entry starts a cohort
# workflow every few hundred milliseconds: compiling engine/journeys/runtime/workflows.py each time (no bytecode
# cache under PYTHONDONTWRITEBYTECODE) took a sixth of the worker's CPU. The module holds no state of
# its own (a class per workflow, constants), so this worker imports it once. A passed-through module
# escapes the sandbox's checks of forbidden calls (datetime.now, I/O...): the journey tests' workers
# (tests/journeys/conftest.py, engine/journeys/testing.py) keep the full sandbox, which catches them.
# The clock-segment refresh (every 5 minutes) and the retention prune have tiny workflow modules, but
# importing one in the sandbox imports its parent package there first: tidings.engine.segments, whose
# __init__ brings SQLAlchemy, SQLModel, pydantic and ~300 other modules, re-executed at each run (a full
# copy of them, part of it kept by the host's registries: ~30 MB more worker memory per run, measured in
# tests/benchmarks/README.md "Worker memory"). Neither module nor package is workflow state.
PASSTHROUGH = ("tidings.engine.journeys.runtime.workflows", "tidings.engine.journeys.runtime.contracts", "tidings.engine.journeys.ir",
               "tidings.engine.segments", "tidings.engine.ops.retention_workflow")


# Threads run the sync activities (a step's reads and writes, a broadcast page): short database work,
# bounded by the engine's connection pool (30 on PostgreSQL). Nothing waits on a thread: sends and
# admission are async, and an idle journey's admission holds neither a thread nor one of the worker's
# activity slots (Temporal's default, 100): it sleeps in its workflow until the entry watch signals it
# (engine/journeys/runtime/admission.py). Before, each idle admission long-polled in a thread, and 16 active
# journeys left the steps of every other journey waiting for a thread.
ACTIVITY_THREADS = 16


def build_worker(client: Client, db: Engine, settings: Settings, journey=None, **options) -> Worker:
    """The worker of the main task queue: every workflow, every activity (`journey.send` too, for journeys
    whose cohorts send on this queue: activated before the send queue, or by a caller that names none)."""
    wire()  # activities write customers' events (sends, journey events)
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    options.setdefault("workflow_runner", SandboxedWorkflowRunner(restrictions=restrictions))
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=workflows(),
        activities=activities(db, settings, journey),
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=ACTIVITY_THREADS),
        **options,
    )


def build_send_worker(client: Client, db: Engine, settings: Settings, journey=None, **options) -> Worker:
    """The worker of the send task queue (Settings.send_queue): only `journey.send`, at most
    `settings.worker_max_cohorts` at once. A cohort's send holds its members' rendered messages while it
    hands them over; the bound keeps a process's memory flat however large the broadcast, and leaves the
    other cohorts' sends in Temporal's queue for the other worker processes to take: that is what spreads
    a broadcast over them. The send is async (no thread), so the bound is the only limit."""
    from tidings.engine.journeys.runtime.activities import JourneyActivities

    wire()
    journey = journey or JourneyActivities(db, settings)
    options.pop("workflow_failure_exception_types", None)  # no workflows here
    options.pop("workflow_runner", None)
    return Worker(client, task_queue=settings.send_queue, activities=[journey.send],
                  max_concurrent_activities=settings.worker_max_cohorts, **options)


def build_workers(client: Client, db: Engine, settings: Settings, plugins: Any = None, **options) -> list[Worker]:
    """What one `tidings worker` process runs: the main queue's worker and the send queue's, sharing one
    set of journey activities (one plugin manager, one entry watch)."""
    from tidings.engine.journeys.runtime.activities import JourneyActivities

    wire()
    journey = JourneyActivities(db, settings, plugins)
    return [build_worker(client, db, settings, journey, **options),
            build_send_worker(client, db, settings, journey, **options)]


async def run_worker(client: Client, db: Engine, settings: Settings, stop: asyncio.Event | None = None,
                     ready: Callable[[], None] | None = None) -> None:
    """Run until `stop` is set (never, without one), then shut down gracefully: no new task is polled, and
    activities in flight (a send) get `settings.shutdown_timeout` seconds to finish and record their outcome
    before they are cancelled (a cancelled send is retried by the next worker, skipping what was sent)."""
    from tidings.engine.channels import secrets as channel_secrets
    from tidings.engine.channels.config import load_plugins
    from tidings.engine.journeys.store import resume_activations
    from tidings.engine.platform.installation import installation_id
    from tidings.engine.ops import retention
    from tidings.engine.segments.refresh import ensure_schedule

    channel_secrets.announce()  # the worker sends: unusable keys stop it here, a missing key is said once
    installation = await asyncio.to_thread(installation_id, db)
    await ensure_schedule(client, settings.task_queue, installation)
    await retention.ensure_schedule(client, settings.task_queue, installation)
    # activations a dead process left half-done
    await resume_activations(client, db, settings.task_queue, settings.send_queue)
    # One plugin manager for the whole process: the sends and the redelivery loop share it, and its plugins'
    # `startup` and `shutdown` hooks bracket the polling, as in the API process (a broken plugin stops here).
    plugins = await asyncio.to_thread(load_plugins)
    await plugins.startup(settings)
    try:
        await _poll(client, db, settings, plugins, stop, ready)
    finally:
        await plugins.shutdown(settings)  # e.g. the SMTP plugin QUITs its pooled connections
    log.info("worker stopped")


async def _poll(client: Client, db: Engine, settings: Settings, plugins: Any, stop: asyncio.Event | None,
                ready: Callable[[], None] | None) -> None:
    from tidings.engine.journeys.runtime.admission import sweep_orphans

    main, sends = build_workers(client, db, settings, plugins,
                                graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_timeout))
    tune_collector()
    async with main, sends:
        redeliveries = asyncio.create_task(_redeliver(db, plugins), name="redelivery")
        # finished workflow runs are cycles the tuned collector would leave for minutes (collector.py)
        collector = asyncio.create_task(collect_forever(), name="tidings-full-collection")
        # every worker wakes the idle journeys whose entry watch died with another worker
        sweep = asyncio.create_task(sweep_orphans(client, db), name="tidings-entry-sweep")
        if ready is not None:  # resumed activations are started and the worker polls
            ready()
        try:
            await (stop or asyncio.Event()).wait()
            log.info("stopping: waiting up to %s s for activities in flight", settings.shutdown_timeout)
        finally:
            sweep.cancel()
            redeliveries.cancel()
            collector.cancel()


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM (what a deploy, systemd or Kubernetes sends) and SIGINT set `stop` instead of killing."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _redeliver(db: Engine, plugins: Any) -> None:
    """Transactional messages left `retrying` are resent by the workers when due (tidings.engine.messaging.redelivery)."""
    from tidings.engine.messaging import redelivery

    await asyncio.sleep(redelivery.EVERY)  # not during start-up (`tidings dev` serves its API on this loop)
    await redelivery.run_forever(db, plugins)
