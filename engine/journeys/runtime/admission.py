"""How an idle admission workflow learns that its journey has entries to claim, holding nothing meanwhile.

Each event- or segment-triggered journey has an admission workflow. When its `journey.admit` call finds
nothing ready, the call registers the workflow with this worker process's `EntryWatch` and returns; the
workflow then sleeps on a timer (`AdmissionInput.wait_seconds`). The watch reads the entry queue of every
registered journey together, two small queries per tick and workspace (per 500 journeys), and signals
(`ENTRIES_READY`) each workflow whose entries are ready (or whose journey was stopped); the workflow wakes
and claims. No activity, worker thread or activity slot is held while a journey waits, so 200 idle journeys
cost what one costs. The workflow's timer is long (`AdmissionInput.idle_seconds`, 10 minutes): a timer
every 20 s for each of 200 journeys, firing together, was itself a load that slowed every step.

A registration lives in one worker process. If that worker dies, `sweep_orphans` (every worker runs it)
finds the active journeys whose entries have waited longer than any registered journey's would, and
signals their admission workflows: they claim, and register with a live worker.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event, func, select

from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import reading
from tidings.engine.platform.installation import installation_id
from tidings.engine.journeys.runtime.contracts import ENTRIES_READY, AdmitCall, admission_workflow_id
from tidings.engine.journeys.tables import journey_entries, journeys

log = logging.getLogger("tidings.journeys.admission")

TICK_SECONDS = 0.05  # how often the watch looks at the queue: an entry waits at most this (plus the window)
GRACE_SECONDS = 5.0  # a registration outlives the workflow's timer by this, so a re-registration never gaps
SWEEP_SECONDS = 5.0  # how often each worker looks for journeys whose entries nobody is claiming
ORPHANED_AFTER_SECONDS = 3.0  # entries this old are not being watched (a watched one waits the window)


def ready(queued: int, oldest_enqueued_at: int, first_seen: float | None, limit: int, window_seconds: float) -> bool:
    """Whether queued entries should be claimed now: `limit` of them, or the oldest has waited the
    window (by the enqueuing clock, or by this process's since it first saw them: clock skew between the
    API and the worker can then delay a cohort by at most the window)."""
    if queued <= 0:
        return False
    if queued >= limit or window_seconds <= 0:
        return True
    waited_ms = max(now_ms() - oldest_enqueued_at,
                    (time.monotonic() - first_seen) * 1000 if first_seen is not None else 0)
    return waited_ms >= window_seconds * 1000


def queue_state(conn, workspace_id: int, journey_ids: list[str]) -> dict[str, tuple[int, int]]:
    """journey_id -> (entries queued, oldest enqueued_at), for the given journeys that have any."""
    rows = conn.execute(select(journey_entries.c.journey_id, func.count(), func.min(journey_entries.c.enqueued_at))
                        .where(journey_entries.c.workspace_id == workspace_id,
                               journey_entries.c.journey_id.in_(journey_ids))
                        .group_by(journey_entries.c.journey_id)).all()
    return {r[0]: (r[1], r[2]) for r in rows}


@dataclass
class Waiter:
    workflow_id: str
    workspace_id: int
    journey_id: str
    limit: int
    window_seconds: float
    until: float  # monotonic: the registration lapses (the workflow's own timer has woken it by then)
    client: Any  # temporalio Client that signals the workflow
    first_seen: float | None = None  # monotonic: when the watch first saw entries queued


class EntryWatch:
    """Per worker process: the idle admission workflows registered here, and the task that wakes them."""

    def __init__(self, db: Engine, tick_seconds: float = TICK_SECONDS):
        self.db, self.tick_seconds = db, tick_seconds
        self.waiting: dict[str, Waiter] = {}  # admission workflow id -> what it waits for
        self._task: asyncio.Task | None = None
        self._listening = False

    def register(self, client, workflow_id: str, call: AdmitCall, wait_seconds: float) -> None:
        """Called from a `journey.admit` that found nothing ready (on the worker's event loop)."""
        self.waiting[workflow_id] = Waiter(workflow_id=workflow_id, workspace_id=call.workspace_id,
                                           journey_id=call.journey_id, limit=call.limit,
                                           window_seconds=call.window_seconds,
                                           until=time.monotonic() + wait_seconds + GRACE_SECONDS, client=client)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            if not self._listening:  # the store going away ends the watch (a test's database, a worker's exit)
                event.listen(self.db, "engine_disposed", lambda _engine: self.close())
                self._listening = True
            self._task = loop.create_task(self._run(), name="tidings-entry-watch")

    def close(self) -> None:
        """Forget every registration and stop reading: their workflows' timers (or another worker's sweep)
        wake them."""
        self.waiting.clear()  # the task ends at its next tick
        task, self._task = self._task, None
        if task is not None and not task.done() and not task.get_loop().is_closed():
            task.get_loop().call_soon_threadsafe(task.cancel)  # dispose() may be called from any thread

    async def _run(self) -> None:
        """Runs while anything is registered: a watch with nothing to watch reads nothing."""
        while self.waiting:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is briefly unreachable: registrations lapse, timers wake the workflows
                log.warning("entry watch: reading the queue failed", exc_info=True)
            await asyncio.sleep(self.tick_seconds)

    async def tick(self) -> None:
        now = time.monotonic()
        for wf_id in [w for w, x in self.waiting.items() if x.until <= now]:
            del self.waiting[wf_id]
        if not self.waiting:
            return
        snapshot = list(self.waiting.values())
        statuses, queues = await asyncio.to_thread(self._read, snapshot)
        if not self.waiting:
            return  # closed meanwhile
        due = []
        for w in snapshot:
            key = (w.workspace_id, w.journey_id)
            status = statuses.get(key)
            queued, oldest = queues.get(key, (0, 0))
            if status == "active" and queued:
                w.first_seen = w.first_seen or time.monotonic()
            if status in (None, "stopped") or (status == "active" and ready(queued, oldest, w.first_seen, w.limit,
                                                                            w.window_seconds)):
                due.append(w)
        for w in due:
            if self.waiting.get(w.workflow_id) is w:  # not re-registered meanwhile
                del self.waiting[w.workflow_id]
        if due:
            await asyncio.gather(*(self._wake(w) for w in due))

    def _read(self, waiters: list[Waiter]) -> tuple[dict, dict]:
        """Statuses of the watched journeys, and the queues of the active ones: a pair of reads per workspace."""
        by_ws: dict[int, list[str]] = {}
        for w in waiters:
            by_ws.setdefault(w.workspace_id, []).append(w.journey_id)
        statuses: dict[tuple[int, str], str] = {}
        queues: dict[tuple[int, str], tuple[int, int]] = {}
        with reading(self.db) as conn:
            for workspace, all_ids in by_ws.items():
                all_ids = sorted(set(all_ids))
                for start in range(0, len(all_ids), 500):  # bound the bound parameters of one statement
                    ids = all_ids[start:start + 500]
                    rows = conn.execute(select(journeys.c.journey_id, journeys.c.status).where(
                        journeys.c.workspace_id == workspace, journeys.c.journey_id.in_(ids))).all()
                    statuses.update({(workspace, r[0]): r[1] for r in rows})
                    active = [r[0] for r in rows if r[1] == "active"]  # a paused journey's backlog waits unread
                    if active:
                        queues.update({(workspace, j): q for j, q in queue_state(conn, workspace, active).items()})
        return statuses, queues

    async def _wake(self, w: Waiter) -> None:
        try:
            await w.client.get_workflow_handle(w.workflow_id).signal(ENTRIES_READY)
        except Exception:  # ended (stopped, cancelled) or unreachable: its own timer covers the rest
            log.debug("entry watch: could not signal %s", w.workflow_id, exc_info=True)


def orphaned(db: Engine, older_than_ms: int) -> list[tuple[int, str]]:
    """(workspace, journey) of active journeys with an entry queued before `older_than_ms`: one grouped,
    indexed read of the queue (which holds only what is not yet claimed)."""
    with reading(db) as conn:
        rows = conn.execute(select(journey_entries.c.workspace_id, journey_entries.c.journey_id)
                            .join(journeys, (journeys.c.workspace_id == journey_entries.c.workspace_id)
                                  & (journeys.c.journey_id == journey_entries.c.journey_id))
                            .where(journeys.c.status == "active", journey_entries.c.enqueued_at < older_than_ms)
                            .group_by(journey_entries.c.workspace_id, journey_entries.c.journey_id)).all()
    return [(r[0], r[1]) for r in rows]


async def sweep_orphans(client, db: Engine, every: float = SWEEP_SECONDS,
                        older_than: float = ORPHANED_AFTER_SECONDS) -> None:
    """Runs for the life of a worker: wakes the admission workflows of journeys whose entries wait unclaimed
    (their registration died with a worker). A journey claiming a backlog is signalled too, harmlessly."""
    installation = await asyncio.to_thread(installation_id, db)
    while True:
        await asyncio.sleep(every)
        try:
            found = await asyncio.to_thread(orphaned, db, now_ms() - int(older_than * 1000))
        except Exception:
            log.warning("entry sweep: reading the queue failed", exc_info=True)
            continue
        for workspace, jid in found:
            try:
                await client.get_workflow_handle(admission_workflow_id(installation, workspace, jid)).signal(ENTRIES_READY)
            except Exception:
                log.debug("entry sweep: could not signal %s/%s", workspace, jid, exc_info=True)
