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

from tidings.engine.customers.events import ingest
from tidings.engine.segments.service import put_static_segment
from tidings.engine.journeys import store
from tidings.engine.journeys.runtime.contracts import broadcast_workflow_id
from tidings.engine.platform.installation import installation_id
from tidings.engine.journeys.testing import AnyCatalog
from tidings.engine.customers.schemas import EventIn
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template
from tests.eventually import aeventually

WELCOME = """apiVersion: tidings/v1
kind: Journey
id: welcome
entry:
  event: {name: signed_up, filter: {"==": [{"var": "event.plan"}, "trial"]}}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
  - {id: bye, send: {channel: EMAIL, template: t}}
"""




def count(db, sql, **kw):
    with db.connect() as conn:
        return conn.execute(text(sql), kw).scalar()


async def test_event_entry_admits_filtered_events_once_and_sends(temporal_dev, runtime_db, dev_worker):
    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    # every test database numbers its workspace 1 and the admission workflow id is per (workspace, journey):
    # a journey id of its own, so the previous parameter's admission workflow (still draining) is not reused
    jid = f"welcome-{uuid.uuid4().hex[:6]}"
    source = WELCOME.replace("id: welcome", f"id: {jid}")
    info, created = store.put_journey(db, workspace, source)  # references checked against the workspace
    assert created and info.version == 1 and info.status == "draft"
    assert store.put_journey(db, workspace, source)[1] is False  # same source: no new version
    await store.activate(client, db, workspace, jid, task_queue=dev_worker)
    add_customers(db, workspace, [f"u{i}" for i in range(20)])
    ingest(db, workspace, [EventIn(name="signed_up", user_id=f"u{i}", attributes={"plan": "trial" if i % 2 else "pro"})
                    for i in range(20)])
    ingest(db, workspace, [EventIn(name="signed_up", user_id="u1", attributes={"plan": "trial"})])  # max_entries 1
    await aeventually(lambda: count(db, "select count(*) from journey_run where status = 'completed'") == 10)
    # two messages for each of the 10 trial customers, delivered to the outbox at their address
    assert count(db, "select count(*) from outbox_message") == 20
    assert count(db, "select count(distinct address) from outbox_message") == 10
    assert count(db, "select count(*) from outbox_message where address = 'u1@example.com'") == 2
    assert count(db, "select count(*) from message where status = 'sent' and journey_id = :j", j=jid) == 20
    assert count(db, "select count(*) from event where name = '_email.send'") == 20
    runs = store.list_runs(db, workspace, jid, user_id="u1")
    assert len(runs) == 1 and [s["step"] for s in runs[0].steps] == ["hello", "bye", "end"]
    desc = await client.get_workflow_handle(runs[0].workflow_id).describe()
    assert runs[0].workflow_id.startswith(f"{installation_id(db)}/journey/{workspace.id}/{jid}/v1/cohort/")
    assert desc.typed_search_attributes  # TidingsJourney / version / step are set
    history = await client.get_workflow_handle(runs[0].workflow_id).fetch_history()
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    assert scheduled == ["journey.send", "journey.send"], "the last send also records the run's end"
    await store.stop(client, db, workspace, jid)
    assert store.get_journey(db, workspace, jid).status == "stopped"


async def test_entries_arriving_within_the_admission_window_share_one_cohort(temporal_dev, runtime_db, dev_worker):
    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    jid = f"welcome-{uuid.uuid4().hex[:6]}"
    await store.activate(client, db, workspace, jid, task_queue=dev_worker) if store.put_journey(
        db, workspace, WELCOME.replace("id: welcome", f"id: {jid}"))[1] else None
    add_customers(db, workspace, [f"w{i}" for i in range(10)])
    for part in (range(0, 5), range(5, 10)):  # two requests 100 ms apart, inside the 250 ms window
        ingest(db, workspace, [EventIn(name="signed_up", user_id=f"w{i}", attributes={"plan": "trial"}) for i in part])
        await asyncio.sleep(0.1)
    await aeventually(lambda: count(db, "select count(*) from journey_run where journey_id = :j and status = 'completed'",
                              j=jid) == 10)
    assert count(db, "select count(distinct cohort) from journey_run where journey_id = :j", j=jid) == 1
    assert count(db, "select count(*) from message where status = 'sent' and journey_id = :j", j=jid) == 20
    await store.stop(client, db, workspace, jid)


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
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    pks = add_customers(db, workspace, [f"c{i}" for i in range(2500)])
    put_static_segment(db, workspace, "everyone", pks)
    store.put_journey(db, workspace, BROADCAST)
    await store.activate(client, db, workspace, "promo", task_queue=dev_worker)
    await aeventually(lambda: len(smtp_sink.mails) >= 2500, 90)
    assert count(db, "select count(*) from journey_cohort where journey_id = 'promo'") == 3  # 1000+1000+500
    await aeventually(lambda: count(db, "select count(*) from message where status = 'sent'") == 2500, 30)
    await asyncio.sleep(0.5)
    rcpts = [r for _, rs, _ in smtp_sink.mails for r in rs]
    assert len(rcpts) == 2500 and set(rcpts) == {f"c{i}@example.com" for i in range(2500)}
    mail = smtp_sink.to("c7@example.com")[0]
    assert mail["Subject"] == "Hi c7" and "Hello c7" in mail.get_body(("plain",)).get_content()
    assert count(db, "select count(*) from outbox_message") == 0
    assert count(db, "select count(*) from event where name = '_email.send'") == 2500


async def test_new_version_keeps_running_cohorts_and_replays(temporal_dev, runtime_db, dev_worker):
    """Record a cohort's history on the dev server, then replay it against the workflow code, before and
    after a new version of the journey is put: the replay must not raise."""
    from tidings.engine.journeys.runtime.workflows import JourneyCohortWorkflow
    from tidings.engine.platform.temporal import DATA_CONVERTER

    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    v1 = WELCOME.replace("steps:\n", "steps:\n  - {id: nap, wait: 2s}\n")
    put_template(db, workspace)
    store.put_journey(db, workspace, v1)
    pks = add_customers(db, workspace, ["a", "b", "c"])
    handle = await store.enter(client, db, workspace, "welcome", pks, task_queue=dev_worker,
                               entry={"name": "signed_up", "attributes": {"plan": "trial"}})
    # a new version while the cohort sleeps: it finishes on v1 (the IR is in its input)
    v2 = WELCOME.replace("{id: bye, send: {channel: EMAIL, template: t}}", "{id: bye2, send: {channel: SMS, template: t}}")
    info, created = store.put_journey(db, workspace, v2, AnyCatalog())
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
    store.put_journey(db, workspace, v2.replace("bye2", "bye3"), AnyCatalog())
    await replayer.replay_workflow(history)


LOCAL_NINE = """apiVersion: tidings/v1
kind: Journey
id: {jid}
entry:
  broadcast: {{segment: pro-users, {schedule}, timezone: customer}}
settings:
  default_timezone: Europe/Paris
  entry: {{max_entries: unlimited}}
steps:
  - {{id: morning, send: {{channel: EMAIL, template: t}}}}
"""


def _local_customers(db, workspace):
    """Pro customers in Tokyo, New York and without a zone (default_timezone Europe/Paris), one free one
    in Tokyo, and a real dynamic segment of the pro ones."""
    from tidings.engine.customers.users import upsert_users
    from tidings.engine.customers.schemas import UserBatchItem
    from tidings.engine.segments.service import SegmentIn, create_segment

    put_template(db, workspace)
    add_customers(db, workspace, ["tokyo", "newyork", "nozone", "free-tokyo"])
    upsert_users(db, workspace, [UserBatchItem(user_id="tokyo", timezone="Asia/Tokyo", attributes={"plan": "pro"}),
                          UserBatchItem(user_id="newyork", timezone="America/New_York", attributes={"plan": "pro"}),
                          UserBatchItem(user_id="nozone", attributes={"plan": "pro"}),
                          UserBatchItem(user_id="free-tokyo", timezone="Asia/Tokyo", attributes={"plan": "free"})])
    create_segment(db, workspace, SegmentIn(id="pro-users", name="Pro", rule={"==": [{"var": "attributes.plan"}, "pro"]}))


async def _active_local_journey(db, client, worker, prefix: str, schedule: str):
    """The customers of `_local_customers` and an active `timezone: customer` broadcast to the pro ones."""
    workspace = ensure_workspace(db, "acme")
    _local_customers(db, workspace)
    jid = f"{prefix}-{uuid.uuid4().hex[:6]}"
    store.put_journey(db, workspace, LOCAL_NINE.format(jid=jid, schedule=schedule))
    await store.activate(client, db, workspace, jid, task_queue=worker)
    return workspace, jid


async def _backfill(client, db, workspace_id, jid, start, end, firings: int) -> None:
    """Run the journey's schedule over a past range, as Temporal would have fired it then (each firing's
    nominal time is its TemporalScheduledStartTime); returns once all `firings` broadcasts have finished."""
    from datetime import datetime

    from temporalio.client import ScheduleBackfill, ScheduleOverlapPolicy

    handle = client.get_schedule_handle(store.schedule_id(installation_id(db), workspace_id, jid, 1))
    await handle.backfill(ScheduleBackfill(start_at=datetime.fromisoformat(start), end_at=datetime.fromisoformat(end),
                                           overlap=ScheduleOverlapPolicy.ALLOW_ALL))
    prefix = broadcast_workflow_id(installation_id(db), workspace_id, jid, 1)
    query = f"WorkflowId STARTS_WITH '{prefix}' AND ExecutionStatus = 'Completed'"
    done, give_up = 0, time.monotonic() + 180  # 57-62 broadcasts on a loaded 2-core box
    while done < firings:
        assert time.monotonic() < give_up, f"{done} of {firings} broadcasts finished"
        await asyncio.sleep(0.2)
        done = (await client.count_workflows(query)).count
    assert done == firings and (await handle.describe()).info.num_actions == firings


def _entered_at_firing(db, jid) -> dict[str, str]:
    """user_id -> the nominal firing time of the broadcast whose cohort they entered in (from its claim key)."""
    with db.connect() as conn:
        rows = conn.execute(text(
            "select u.user_id, c.claim_key from journey_run r join users u on u.id = r.user_pk "
            "join journey_cohort c on c.workspace_id = r.workspace_id and c.journey_id = r.journey_id "
            "and c.cohort = r.cohort where r.journey_id = :j"), {"j": jid}).all()
    return {u: key.split("/broadcast-", 1)[1].rsplit("/", 1)[0] for u, key in rows}


async def test_cron_in_customer_zones_enters_each_at_their_own_nine(temporal_dev, runtime_db, dev_worker):
    """`cron: 0 9 * * *` with `timezone: customer`: replaying a past day of the schedule (a backfill, so
    nothing sleeps) puts Tokyo in at 00:00 UTC, no-zone (Paris) at 08:00 and New York at 14:00, once each."""
    db, client = runtime_db, temporal_dev.client
    workspace, jid = await _active_local_journey(db, client, dev_worker, "nine", 'cron: "0 9 * * *"')
    schedule = client.get_schedule_handle(store.schedule_id(installation_id(db), workspace.id, jid, 1))
    upcoming = (await schedule.describe()).info.next_action_times
    assert {t.minute for t in upcoming} <= {0, 15, 30, 45} and {(b - a).seconds for a, b in zip(upcoming, upcoming[1:])} \
        == {900}  # every quarter hour (UTC): the grid on which 09:00 in any zone falls
    # A live firing on that grid while the test runs would add a broadcast to the counts below; a paused
    # schedule still runs a backfill
    await schedule.pause(note="the test replays a past day")
    await _backfill(client, db, workspace.id, jid, "2026-01-14T23:50:00+00:00", "2026-01-15T14:10:00+00:00",
                    firings=57)  # 00:00 .. 14:00 UTC, every 15 minutes
    assert _entered_at_firing(db, jid) == {"tokyo": "2026-01-15T00:00:00Z", "nozone": "2026-01-15T08:00:00Z",
                                           "newyork": "2026-01-15T14:00:00Z"}
    await aeventually(lambda: count(db, "select count(*) from journey_run where journey_id = :j and status = 'completed'",
                              j=jid) == 3)
    assert count(db, "select count(*) from outbox_message") == 3  # one message each, none to the free customer
    assert count(db, "select count(*) from journey_cohort where journey_id = :j", j=jid) == 3  # idle firings record nothing
    await store.stop(client, db, workspace, jid)


async def test_a_schedule_made_before_customer_zones_admits_everyone_until_the_journey_is_reactivated(
        temporal_dev, runtime_db, dev_worker):
    """Schedules of `timezone: customer` journeys made before customer zones were honoured fire daily in UTC
    and start their broadcasts without `local_zones`: such a firing still admits every member (not only the
    zones at UTC+0), and activating the journey again replaces the schedule with the quarter-hour grid."""
    from temporalio.client import Schedule, ScheduleActionStartWorkflow, ScheduleSpec

    from tidings.engine.journeys.runtime.contracts import BroadcastInput

    db, client = runtime_db, temporal_dev.client
    workspace, jid = await _active_local_journey(db, client, dev_worker, "old", 'cron: "0 9 * * *"')
    handle = client.get_schedule_handle(store.schedule_id(installation_id(db), workspace.id, jid, 1))
    await handle.delete()
    legacy = BroadcastInput(workspace_id=workspace.id, journey_id=jid, version=1)  # as the old code made it
    await client.create_schedule(handle.id, Schedule(
        action=ScheduleActionStartWorkflow("JourneyBroadcast", legacy,
                                           id=broadcast_workflow_id(installation_id(db), workspace.id, jid, 1),
                                           task_queue=dev_worker),
        spec=ScheduleSpec(cron_expressions=["0 9 * * *"])))
    await _backfill(client, db, workspace.id, jid, "2026-01-15T08:50:00+00:00", "2026-01-15T09:10:00+00:00", firings=1)
    assert _entered_at_firing(db, jid) == {u: "2026-01-15T09:00:00Z" for u in ("tokyo", "newyork", "nozone")}
    await store.activate(client, db, workspace, jid, task_queue=dev_worker)
    upcoming = (await handle.describe()).info.next_action_times
    assert {(b - a).seconds for a, b in zip(upcoming, upcoming[1:])} == {900}
    await store.stop(client, db, workspace, jid)


async def test_local_at_in_customer_zones_enters_each_zone_when_its_clock_reaches_it(temporal_dev, runtime_db,
                                                                                      dev_worker):
    db, client = runtime_db, temporal_dev.client
    workspace, jid = await _active_local_journey(db, client, dev_worker, "once", 'at: "2026-01-15T09:00"')
    spec = (await client.get_schedule_handle(store.schedule_id(installation_id(db), workspace.id, jid, 1)).describe()).schedule.spec
    # bounded to the hours in which 09:00 on that date happens somewhere (UTC+14 .. UTC-12)
    assert (spec.start_at.isoformat(), spec.end_at.isoformat()) == ("2026-01-14T18:45:00+00:00",
                                                                     "2026-01-15T21:15:00+00:00")
    await _backfill(client, db, workspace.id, jid, "2026-01-14T12:00:00+00:00", "2026-01-15T10:00:00+00:00",
                    firings=62)  # 18:45 (the schedule's start) .. 10:00 UTC
    # New York's 09:00 (14:00 UTC) is after the replayed range
    assert _entered_at_firing(db, jid) == {"tokyo": "2026-01-15T00:00:00Z", "nozone": "2026-01-15T08:00:00Z"}
    await store.stop(client, db, workspace, jid)


async def test_entry_filter_sees_endpoints_and_segments_of_the_customer(temporal_dev, runtime_db, dev_worker):
    """An event entry `filter` reads the segments' customer document: endpoints and segment memberships."""
    from tidings.engine.customers.endpoints import upsert_endpoints
    from tidings.engine.customers.schemas import EndpointBatchItem, Location

    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    _local_customers(db, workspace)  # tokyo, newyork, nozone are in `pro-users`; free-tokyo is not
    upsert_endpoints(db, workspace, [EndpointBatchItem(endpoint_id=f"{u}-sms", channel="SMS", user_id=u, address=f"+1555000{i}",
                                                location=Location(country="JP"))
                              for i, u in enumerate(["tokyo", "free-tokyo"])])
    jid = f"texted-{uuid.uuid4().hex[:6]}"
    store.put_journey(db, workspace, f"""apiVersion: tidings/v1
kind: Journey
id: {jid}
entry:
  event:
    name: ordered
    filter: {{"and": [{{"in": ["pro-users", {{"var": "customer.segments"}}]}},
                      {{"some": [{{"var": "customer.endpoints"}},
                                {{"and": [{{"==": [{{"var": "channel"}}, "SMS"]}},
                                          {{"==": [{{"var": "location.country"}}, "JP"]}}]}}]}}]}}
steps:
  - {{id: thanks, send: {{channel: EMAIL, template: t}}}}
""")
    await store.activate(client, db, workspace, jid, task_queue=dev_worker)
    ingest(db, workspace, [EventIn(name="ordered", user_id=u) for u in ["tokyo", "free-tokyo", "newyork", "nozone"]])
    await aeventually(lambda: count(db, "select count(*) from journey_run where journey_id = :j and status = 'completed'",
                              j=jid) == 1)
    assert [r.user_id for r in store.list_runs(db, workspace, jid)] == ["tokyo"]  # pro and an SMS endpoint in Japan
    await store.stop(client, db, workspace, jid)
