"""The admission workflow waits on a timer the entry watch cuts short (engine/journeys/runtime/admission.py):
histories recorded by the long-polling admission replay, the long poll still serves them (holding no
thread), and an idle journey has no activity in flight."""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import msgspec
from sqlalchemy import insert, update
from temporalio.client import WorkflowHistory
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer

from tidings.engine.platform.clock import now_ms
from tidings.engine.customers.events import ingest
from tidings.engine.journeys import store
from tidings.engine.platform.installation import installation_id
from tidings.engine.journeys.runtime.activities import JourneyActivities
from tidings.engine.journeys.runtime.contracts import AdmissionInput, AdmitCall, admission_workflow_id
from tidings.engine.journeys.tables import journey_entries, journeys
from tidings.engine.customers.schemas import EventIn
from tidings.engine.platform.temporal import DATA_CONVERTER
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template
from tests.journeys.test_many_journeys import ON_EVENT
from tests.eventually import aeventually
from tests.journeys.test_runtime_devserver import count

HISTORIES = Path(__file__).parent / "histories"


async def test_an_idle_admission_holds_no_activity_and_wakes_on_entries(temporal_dev, runtime_db, dev_worker):
    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    add_customers(db, workspace, ["a", "b"])
    jid = f"hello-{uuid.uuid4().hex[:6]}"
    store.put_journey(db, workspace, ON_EVENT.format(id=jid, event="signed_up"))
    # a timer far longer than the test: only the watch's signal can wake the workflow in time
    await store.activate(client, db, workspace, jid, task_queue=dev_worker,
                         admission=AdmissionInput(workspace_id=workspace.id, journey_id=jid, idle_seconds=600))
    handle = client.get_workflow_handle(admission_workflow_id(installation_id(db), workspace.id, jid))
    await asyncio.sleep(1.5)
    assert (await handle.describe()).raw_description.pending_activities == [], "idle: nothing in flight"
    for user in ("a", "b"):
        started = time.monotonic()
        ingest(db, workspace, [EventIn(name="signed_up", user_id=user)])
        await aeventually(lambda user=user: count(db, "select count(*) from message where status = 'sent' and journey_id = :j "
                                      "and user_pk = (select id from users where user_id = :u)", j=jid, u=user) == 1, 15)
        assert time.monotonic() - started < 5.0
        await asyncio.sleep(1.0)
    await store._status(client, db, workspace, jid, "stopped", entries=False)  # the watch wakes it to end
    from tidings.engine.journeys.runtime.workflows import JourneyAdmissionWorkflow

    await asyncio.wait_for(handle.result(), 10)
    history = await handle.fetch_history()
    admits = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    assert len(admits) == 4, "one call at the start and per wake-up (2 entries, the stop), none while idle"
    await Replayer(workflows=[JourneyAdmissionWorkflow], data_converter=DATA_CONVERTER).replay_workflow(history)


async def test_a_journey_whose_watching_worker_died_is_woken_by_the_sweep(temporal_dev, runtime_db):
    """The registration lives in the worker that took the last call; when that worker is gone, the idle
    workflow sleeps on its long timer and only the sweep (every worker runs one) notices its entries."""
    import concurrent.futures

    from temporalio.worker import Worker

    from tidings.engine.journeys.runtime.admission import sweep_orphans
    from tidings.engine.journeys.runtime.workflows import JourneyAdmissionWorkflow, JourneyCohortWorkflow

    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    add_customers(db, workspace, ["a"])
    jid = f"hello-{uuid.uuid4().hex[:6]}"
    store.put_journey(db, workspace, ON_EVENT.format(id=jid, event="signed_up"))
    queue, acts = f"rt-{uuid.uuid4().hex[:8]}", JourneyActivities(db)
    async with Worker(client, task_queue=queue, workflows=[JourneyCohortWorkflow, JourneyAdmissionWorkflow],
                      activities=acts.all(), activity_executor=concurrent.futures.ThreadPoolExecutor(4)):
        await store.activate(client, db, workspace, jid, task_queue=queue)
        await aeventually(lambda: admission_workflow_id(installation_id(db), workspace.id, jid) in acts.entry_watch.waiting, 15)
        acts.entry_watch.waiting.clear()  # what a worker killed while the journey idled leaves: no one watching
        ingest(db, workspace, [EventIn(name="signed_up", user_id="a")])
        sent = "select count(*) from message where status = 'sent' and journey_id = :j"
        await asyncio.sleep(4)
        assert count(db, sent, j=jid) == 0, "unwatched, the workflow sleeps on"
        sweep = asyncio.create_task(sweep_orphans(client, db, every=0.5))
        try:
            await aeventually(lambda: count(db, sent, j=jid) == 1, 10)
        finally:
            sweep.cancel()
        await store.stop(client, db, workspace, jid)


async def test_the_long_poll_of_old_histories_waits_without_a_thread_and_returns_entries(runtime_db):
    db = runtime_db
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    (pk,) = add_customers(db, workspace, ["a"])
    store.put_journey(db, workspace, ON_EVENT.format(id="hello", event="signed_up"))
    with db.begin() as conn:  # active in the store: one activity call needs no Temporal side
        conn.execute(update(journeys).where(journeys.c.journey_id == "hello").values(status="active",
                                                                                     active_version=1))
    acts, env = JourneyActivities(db), ActivityEnvironment()
    call = AdmitCall(workspace_id=workspace.id, journey_id="hello", claim_key="old/0", wait_seconds=1.0)
    started = time.monotonic()
    # forty empty long polls at once on one event loop: a sync activity would run them one after another
    results = await asyncio.gather(*(env.run(acts.admit, msgspec.structs.replace(call, claim_key=f"old/{i}"))
                                     for i in range(1, 41)))
    assert all(not r.members and not r.stopped for r in results)
    assert 1.0 <= time.monotonic() - started < 4.0
    with db.begin() as conn:
        conn.execute(insert(journey_entries).values(workspace_id=workspace.id, journey_id="hello", user_pk=pk,
                                                    event={"name": "signed_up"}, enqueued_at=now_ms()))
    adm = await env.run(acts.admit, call)
    assert [m.user_pk for m in adm.members] == [pk]


async def test_a_long_polling_admission_history_replays(dev_worker):
    """Recorded before the entry watch (2 cohorts, idle polls, then the journey stopped). (Importing the
    workflow module first in a sandboxed worker, as every runtime test does, keeps one `ir` module.)"""
    from tidings.engine.journeys.runtime.workflows import JourneyAdmissionWorkflow

    history = WorkflowHistory.from_json("admission", (HISTORIES / "admission_long_poll.json").read_text())
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    assert len(scheduled) >= 3 and set(scheduled) == {"journey.admit"}
    await Replayer(workflows=[JourneyAdmissionWorkflow], data_converter=DATA_CONVERTER).replay_workflow(history)
