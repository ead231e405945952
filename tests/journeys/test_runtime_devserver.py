"""The journey runtime on the real Temporal dev server: entries, broadcasts, lifecycle, versions, replay."""
from __future__ import annotations

import asyncio
import time

from sqlalchemy import text
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from engine.events import ingest
from engine.journeys import audience, store
from engine.journeys.testing import AnyCatalog
from engine.schemas import EventIn
from engine.workspaces import ensure_workspace

WELCOME = """apiVersion: tidings/v1
kind: Journey
id: welcome
entry:
  event: {name: signed_up, filter: {"==": [{"var": "event.plan"}, "trial"]}}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
  - {id: bye, send: {channel: EMAIL, template: t}}
"""


async def until(check, timeout=30.0):
    """Poll the store until `check()` holds (waiting for real work to finish, not for time to pass)."""
    give_up = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < give_up, "timed out"
        await asyncio.sleep(0.05)


def count(db, sql, **kw):
    with db.connect() as conn:
        return conn.execute(text(sql), kw).scalar()


async def test_event_entry_admits_filtered_events_once_and_sends(temporal_dev, runtime_db, dev_worker):
    db, client = runtime_db, temporal_dev.client
    ws = ensure_workspace(db, "acme")
    info, created = store.put_journey(db, ws, WELCOME, AnyCatalog())
    assert created and info.version == 1 and info.status == "draft"
    assert store.put_journey(db, ws, WELCOME, AnyCatalog())[1] is False  # same source: no new version
    await store.activate(client, db, ws, "welcome", task_queue=dev_worker)
    ingest(db, ws, [EventIn(name="signed_up", user_id=f"u{i}", attributes={"plan": "trial" if i % 2 else "pro"})
                    for i in range(20)])
    ingest(db, ws, [EventIn(name="signed_up", user_id="u1", attributes={"plan": "trial"})])  # max_entries 1
    await until(lambda: count(db, "select count(*) from journey_run where status = 'completed'") == 10)
    assert count(db, "select count(*) from event where name = '_email.send'") == 20
    runs = store.list_runs(db, ws, "welcome", user_id="u1")
    assert len(runs) == 1 and [s["step"] for s in runs[0].steps] == ["hello", "bye", "end"]
    desc = await client.get_workflow_handle(runs[0].workflow_id).describe()
    assert runs[0].workflow_id.startswith(f"journey/{ws.id}/welcome/v1/cohort/")
    assert desc.typed_search_attributes  # TidingsJourney / version / step are set
    await store.stop(client, db, ws, "welcome")
    assert store.get_journey(db, ws, "welcome").status == "stopped"


BROADCAST = """apiVersion: tidings/v1
kind: Journey
id: promo
entry: {broadcast: {segment: everyone}}
steps:
  - {id: offer, send: {channel: EMAIL, template: t}}
"""


async def test_broadcast_snapshots_segment_into_cohorts(temporal_dev, runtime_db, dev_worker):
    db, client = runtime_db, temporal_dev.client
    ws = ensure_workspace(db, "acme")
    ingest(db, ws, [EventIn(name="seen", user_id=f"c{i}") for i in range(2500)])
    with db.connect() as conn:
        pks = [r[0] for r in conn.execute(text("select id from users"))]
    audience.use_static_segments(ws.id, {"everyone": pks})
    try:
        store.put_journey(db, ws, BROADCAST, AnyCatalog())
        await store.activate(client, db, ws, "promo", task_queue=dev_worker)
        await until(lambda: count(db, "select count(*) from event where name = '_email.send'") == 2500, 60)
        assert count(db, "select count(*) from journey_cohort where journey_id = 'promo'") == 3  # 1000+1000+500
        await asyncio.sleep(0.5)
        assert count(db, "select count(*) from event where name = '_email.send'") == 2500
    finally:
        audience.clear_static_segments()


async def test_new_version_keeps_running_cohorts_and_replays(temporal_dev, runtime_db, dev_worker):
    """Record a cohort's history on the dev server, then replay it against the workflow code, before and
    after a new version of the journey is put: the replay must not raise."""
    from engine.journeys.workflows import JourneyCohortWorkflow
    from engine.temporal import DATA_CONVERTER

    db, client = runtime_db, temporal_dev.client
    ws = ensure_workspace(db, "acme")
    v1 = WELCOME.replace("steps:\n", "steps:\n  - {id: nap, wait: 2s}\n")
    store.put_journey(db, ws, v1, AnyCatalog())
    ingest(db, ws, [EventIn(name="x", user_id=u) for u in ("a", "b", "c")])
    with db.connect() as conn:
        pks = [r[0] for r in conn.execute(text("select id from users order by id"))]
    handle = await store.enter(client, db, ws, "welcome", pks, task_queue=dev_worker,
                               entry={"name": "signed_up", "attributes": {"plan": "trial"}})
    # a new version while the cohort sleeps: it finishes on v1 (the IR is in its input)
    v2 = WELCOME.replace("{id: bye, send: {channel: EMAIL, template: t}}", "{id: bye2, send: {channel: SMS, template: t}}")
    info, created = store.put_journey(db, ws, v2, AnyCatalog())
    assert created and info.version == 2
    await handle.result()
    with db.connect() as conn:
        steps = {r[0] for r in conn.execute(text("select json_extract(attributes, '$.step_id') from event where name like '\\_%.send' escape '\\'"))}
    assert steps == {"hello", "bye"}
    history: WorkflowHistory = await handle.fetch_history()
    replayer = Replayer(workflows=[JourneyCohortWorkflow], data_converter=DATA_CONVERTER,
                        workflow_failure_exception_types=[Exception])
    await replayer.replay_workflow(history)
    store.put_journey(db, ws, v2.replace("bye2", "bye3"), AnyCatalog())
    await replayer.replay_workflow(history)
