"""The journey runtime on the real Temporal dev server: entries, broadcasts, lifecycle, versions, replay.

Sends take the real messaging path: customers have endpoints, templates are stored, and messages land
in the outbox channel (nothing configured) or, where a test routes EMAIL there, a real SMTP sink."""
from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import text
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from engine.events import ingest
from engine.journeys import audience, store
from engine.journeys.testing import AnyCatalog
from engine.schemas import EventIn
from engine.workspaces import ensure_workspace
from tests.journeys.conftest import add_customers, put_template

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
    put_template(db, ws)
    # every test database numbers its workspace 1 and the admission workflow id is per (workspace, journey):
    # a journey id of its own, so the previous parameter's admission workflow (still draining) is not reused
    jid = f"welcome-{uuid.uuid4().hex[:6]}"
    source = WELCOME.replace("id: welcome", f"id: {jid}")
    info, created = store.put_journey(db, ws, source)  # references checked against the workspace
    assert created and info.version == 1 and info.status == "draft"
    assert store.put_journey(db, ws, source)[1] is False  # same source: no new version
    await store.activate(client, db, ws, jid, task_queue=dev_worker)
    add_customers(db, ws, [f"u{i}" for i in range(20)])
    ingest(db, ws, [EventIn(name="signed_up", user_id=f"u{i}", attributes={"plan": "trial" if i % 2 else "pro"})
                    for i in range(20)])
    ingest(db, ws, [EventIn(name="signed_up", user_id="u1", attributes={"plan": "trial"})])  # max_entries 1
    await until(lambda: count(db, "select count(*) from journey_run where status = 'completed'") == 10)
    # two messages for each of the 10 trial customers, delivered to the outbox at their address
    assert count(db, "select count(*) from outbox_message") == 20
    assert count(db, "select count(distinct address) from outbox_message") == 10
    assert count(db, "select count(*) from outbox_message where address = 'u1@example.com'") == 2
    assert count(db, "select count(*) from message where status = 'sent' and journey_id = :j", j=jid) == 20
    assert count(db, "select count(*) from event where name = '_email.send'") == 20
    runs = store.list_runs(db, ws, jid, user_id="u1")
    assert len(runs) == 1 and [s["step"] for s in runs[0].steps] == ["hello", "bye", "end"]
    desc = await client.get_workflow_handle(runs[0].workflow_id).describe()
    assert runs[0].workflow_id.startswith(f"journey/{ws.id}/{jid}/v1/cohort/")
    assert desc.typed_search_attributes  # TidingsJourney / version / step are set
    history = await client.get_workflow_handle(runs[0].workflow_id).fetch_history()
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    assert scheduled == ["journey.send", "journey.send"], "the last send also records the run's end"
    await store.stop(client, db, ws, jid)
    assert store.get_journey(db, ws, jid).status == "stopped"


async def test_entries_arriving_within_the_admission_window_share_one_cohort(temporal_dev, runtime_db, dev_worker):
    db, client = runtime_db, temporal_dev.client
    ws = ensure_workspace(db, "acme")
    put_template(db, ws)
    jid = f"welcome-{uuid.uuid4().hex[:6]}"
    await store.activate(client, db, ws, jid, task_queue=dev_worker) if store.put_journey(
        db, ws, WELCOME.replace("id: welcome", f"id: {jid}"))[1] else None
    add_customers(db, ws, [f"w{i}" for i in range(10)])
    for part in (range(0, 5), range(5, 10)):  # two requests 100 ms apart, inside the 250 ms window
        ingest(db, ws, [EventIn(name="signed_up", user_id=f"w{i}", attributes={"plan": "trial"}) for i in part])
        await asyncio.sleep(0.1)
    await until(lambda: count(db, "select count(*) from journey_run where journey_id = :j and status = 'completed'",
                              j=jid) == 10)
    assert count(db, "select count(distinct cohort) from journey_run where journey_id = :j", j=jid) == 1
    assert count(db, "select count(*) from message where status = 'sent' and journey_id = :j", j=jid) == 20
    await store.stop(client, db, ws, jid)


BROADCAST = """apiVersion: tidings/v1
kind: Journey
id: promo
entry: {broadcast: {segment: everyone}}
steps:
  - {id: offer, send: {channel: EMAIL, template: t}}
"""


async def test_broadcast_snapshots_segment_into_cohorts_and_mails_each_once(temporal_dev, runtime_db, dev_worker,
                                                                              smtp_sink):
    """EMAIL goes to a real SMTP server on loopback (TIDINGS_SMTP_* set by the smtp_sink fixture)."""
    db, client = runtime_db, temporal_dev.client
    ws = ensure_workspace(db, "acme")
    put_template(db, ws)
    pks = add_customers(db, ws, [f"c{i}" for i in range(2500)])
    audience.use_static_segments(ws.id, {"everyone": pks})
    try:
        store.put_journey(db, ws, BROADCAST)
        await store.activate(client, db, ws, "promo", task_queue=dev_worker)
        await until(lambda: len(smtp_sink.mails) >= 2500, 90)
        assert count(db, "select count(*) from journey_cohort where journey_id = 'promo'") == 3  # 1000+1000+500
        await until(lambda: count(db, "select count(*) from message where status = 'sent'") == 2500, 30)
        await asyncio.sleep(0.5)
        rcpts = [r for _, rs, _ in smtp_sink.mails for r in rs]
        assert len(rcpts) == 2500 and set(rcpts) == {f"c{i}@example.com" for i in range(2500)}
        mail = smtp_sink.to("c7@example.com")[0]
        assert mail["Subject"] == "Hi c7" and "Hello c7" in mail.get_body(("plain",)).get_content()
        assert count(db, "select count(*) from outbox_message") == 0
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
    put_template(db, ws)
    store.put_journey(db, ws, v1)
    pks = add_customers(db, ws, ["a", "b", "c"])
    handle = await store.enter(client, db, ws, "welcome", pks, task_queue=dev_worker,
                               entry={"name": "signed_up", "attributes": {"plan": "trial"}})
    # a new version while the cohort sleeps: it finishes on v1 (the IR is in its input)
    v2 = WELCOME.replace("{id: bye, send: {channel: EMAIL, template: t}}", "{id: bye2, send: {channel: SMS, template: t}}")
    info, created = store.put_journey(db, ws, v2, AnyCatalog())
    assert created and info.version == 2
    await handle.result()
    with db.connect() as conn:
        steps = {r[0] for r in conn.execute(text("select m.step_id from message m join outbox_message o "
                                                 "on o.message_id = m.message_id"))}
    assert steps == {"hello", "bye"}
    history: WorkflowHistory = await handle.fetch_history()
    replayer = Replayer(workflows=[JourneyCohortWorkflow], data_converter=DATA_CONVERTER,
                        workflow_failure_exception_types=[Exception])
    await replayer.replay_workflow(history)
    store.put_journey(db, ws, v2.replace("bye2", "bye3"), AnyCatalog())
    await replayer.replay_workflow(history)
