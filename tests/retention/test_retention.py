"""Retention: `tidings prune` deletes what is past a workspace's retention, in bounded batches, and keeps
what something still reads (each protection has a test that fails without it)."""
from __future__ import annotations

import subprocess
import threading

import pytest
from sqlalchemy import func, select, update

from tidings.engine.customers.events import record
from tidings.engine.customers.schemas import EventIn
from tidings.engine.customers.tables import events
from tidings.engine.journeys.tables import journey_runs, journeys
from tidings.engine.ops.retention import DAY_MS, prune, set_retention
from tidings.engine.platform.clock import now_ms
from tests.processes import TIDINGS, tidings_env

LATER = 500 * DAY_MS  # prune as if this far in the future: everything stored now is past the 400-day default


def _events(api, items):
    r = api.post("/v1/events", json={"events": items})
    assert r.status_code == 202, r.text


def _names(db, workspace_id=None):
    q = select(events.c.name).order_by(events.c.id)
    if workspace_id is not None:
        q = q.where(events.c.workspace_id == workspace_id)
    with db.connect() as conn:
        return list(conn.execute(q).scalars())


def _prune(db, **kw):
    return {(p.workspace, p.table): p.rows for p in prune(db, now=now_ms() + LATER, **kw)}


def _journey(api, yaml_text, journey_id):
    r = api.put(f"/v1/journeys/{journey_id}", content=yaml_text, headers={"Content-Type": "application/yaml"})
    assert r.status_code in (200, 201), r.text


JOURNEY = """\
apiVersion: tidings/v1
kind: Journey
id: {id}
name: Retention
entry:
  event: {{name: signed_up}}
settings:
{settings}
steps:
  - id: hello
    send: {{channel: EMAIL, template: welcome}}
"""


def test_old_events_go_and_other_workspaces_keep_their_own_settings(api, other_api, db):
    _events(api, [{"user_id": "ann", "name": "view"}])
    _events(other_api, [{"user_id": "bob", "name": "view"}])
    set_retention(db, "globex", events_days=1000)
    got = _prune(db)
    assert got[("acme", "event")] == 1
    assert _names(db, workspace_id=1) == [] and _names(db, workspace_id=2) == ["view"]  # globex keeps 1000 days


def _message_event(db, name):
    """A message event as the send and feedback paths store it (their names are reserved on the API)."""
    with db.begin() as conn:
        record(conn, 1, [EventIn(name=name, user_id="ann", attributes={"journey_id": "j"})])


def test_message_events_have_their_own_period(api, db):
    _events(api, [{"user_id": "ann", "name": "view"}])
    _message_event(db, "_email.open")
    set_retention(db, "acme", events_days=1000)
    got = _prune(db)
    assert got[("acme", "event")] == 0 and got[("acme", "message_event")] == 1 and _names(db) == ["view"]
    _message_event(db, "_email.open")
    set_retention(db, "acme", events_days=400, message_events_days=1000)
    _prune(db)
    assert _names(db) == ["_email.open"]


def test_dry_run_counts_and_changes_nothing(api, db):
    _events(api, [{"user_id": f"u{i}", "name": "view"} for i in range(5)])
    got = _prune(db, dry_run=True)
    assert got[("acme", "event")] == 5 and len(_names(db)) == 5
    assert _prune(db)[("acme", "event")] == 5 and _names(db) == []


def test_cli_prints_per_workspace_and_table(api, db, settings, tmp_path):
    _events(api, [{"user_id": "ann", "name": "view"}])
    env = tidings_env(tmp_path / "home", settings.database_url)
    r = subprocess.run([TIDINGS, "retention", "set", "--workspace", "acme", "--events-days", "0"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "events_days" in r.stderr
    r = subprocess.run([TIDINGS, "retention", "set", "--workspace", "acme", "--events-days", "30"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "events 30 days, message events 400 days" in r.stdout, r.stderr
    r = subprocess.run([TIDINGS, "prune", "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert any(line.split() == ["acme", "event", "0"] for line in r.stdout.splitlines()), r.stdout
    assert _names(db) == ["view"]  # stored seconds ago: inside 30 days


def test_batches_are_bounded_and_a_write_between_them_is_not_blocked(api, db):
    _events(api, [{"user_id": f"u{i}", "name": "view"} for i in range(25)])
    sizes, writes = [], []

    def between(n):
        sizes.append(n)
        if len(sizes) == 1:  # a concurrent writer gets through while the prune is under way
            done = threading.Event()

            def write():
                _events(api, [{"user_id": "late", "name": "signup", "id": "late-1"}])
                done.set()

            t = threading.Thread(target=write)
            t.start()
            t.join(timeout=10)
            writes.append(done.is_set())

    got = prune(db, now=now_ms() + LATER, batch_size=10, after_batch=between)
    assert sizes[:3] == [10, 10, 5] and max(sizes) <= 10
    assert writes == [True]
    assert {(p.workspace, p.table): p.rows for p in got}[("acme", "event")] >= 25


# ---- protections: each fails if its rule were removed ----------------------------------------------


def test_events_a_stream_has_not_delivered_stay(api, db):
    _events(api, [{"user_id": "ann", "name": "view", "id": "before"}])
    r = api.put("/v1/event-streams/slow", json={"kind": "webhook", "max_attempts": 100,
                                               "config": {"url": "http://127.0.0.1:9/", "secret": "s"}})
    assert r.status_code == 201, r.text  # starts "now": after `before`
    _events(api, [{"user_id": "ann", "name": "view", "id": "after"}])
    _prune(db)
    with db.connect() as conn:
        assert list(conn.execute(select(events.c.event_id)).scalars()) == ["after"]


def test_event_names_a_windowless_performed_rule_counts_stay_forever(api, db):
    _events(api, [{"user_id": "ann", "name": "purchase"}, {"user_id": "ann", "name": "view"}])
    r = api.post("/v1/segments", json={"id": "buyers", "name": "Buyers", "rule": {"performed": {"event": "purchase"}}})
    assert r.status_code in (200, 201), r.text
    _prune(db)
    assert _names(db) == ["purchase"]


def test_event_names_a_windowed_rule_reads_stay_within_the_window(api, db):
    _events(api, [{"user_id": "ann", "name": "login"}, {"user_id": "ann", "name": "view"}])
    r = api.post("/v1/segments", json={"id": "recent", "name": "Recent", "rule": {
        "last_performed": {"event": "login", "within": "600d"}}})
    assert r.status_code in (200, 201), r.text
    _prune(db)
    assert _names(db) == ["login"]  # 500 days old, inside the 600-day window
    r = api.put("/v1/segments/recent", json={"rule": {"last_performed": {"event": "login", "within": "30d"}}})
    assert r.status_code == 200, r.text
    _prune(db)
    assert _names(db) == []


def test_an_activity_rule_keeps_every_event_of_its_window(api, db):
    _events(api, [{"user_id": "ann", "name": "login"}, {"user_id": "ann", "name": "view"}])
    r = api.post("/v1/segments", json={"id": "active", "name": "Active", "rule": {"active": "600d"}})
    assert r.status_code in (200, 201), r.text
    _prune(db)
    assert _names(db) == ["login", "view"]


def _live(db, journey_id):
    with db.begin() as conn:
        conn.execute(update(journeys).where(journeys.c.journey_id == journey_id).values(status="active"))


def _run(db, journey_id, status, at):
    with db.begin() as conn:
        conn.execute(journey_runs.insert().values(
            workspace_id=1, journey_id=journey_id, version=1, user_pk=1, cohort=0, workflow_id=f"wf-{status}",
            status=status, entered_at=at, updated_at=at, steps=[], entry={}))


def test_events_since_the_oldest_active_run_entered_stay(api, db):
    _events(api, [{"user_id": "ann", "name": "early"}])
    _journey(api, JOURNEY.format(id="ret-run", settings="  default_timezone: UTC"), "ret-run")
    _run(db, "ret-run", "active", now_ms() + 1)
    _events(api, [{"user_id": "ann", "name": "view", "id": "v-after"}])
    _prune(db)
    assert _names(db) == ["view"]


def test_goal_events_of_a_live_journey_stay_as_long_as_its_message_events(api, db):
    _events(api, [{"user_id": "ann", "name": "purchased"}, {"user_id": "ann", "name": "view"}])
    _journey(api, JOURNEY.format(id="ret-goal", settings="  goal: {event: purchased, within: 7d}"), "ret-goal")
    _live(db, "ret-goal")
    set_retention(db, "acme", message_events_days=1000)
    _prune(db)
    assert _names(db) == ["purchased"]


def test_finished_runs_go_unless_entry_limits_count_them(api, db):
    _events(api, [{"user_id": "ann", "name": "view"}])
    _journey(api, JOURNEY.format(id="ret-once", settings="  entry: {max_entries: 1}"), "ret-once")
    _journey(api, JOURNEY.format(id="ret-free", settings="  entry: {max_entries: unlimited}"), "ret-free")
    _live(db, "ret-once")
    _live(db, "ret-free")
    for j in ("ret-once", "ret-free"):
        _run(db, j, "completed", now_ms())
        _run(db, j, "active", now_ms())
    got = _prune(db)
    assert got[("acme", "journey_run")] == 1
    with db.connect() as conn:
        left = conn.execute(select(journey_runs.c.journey_id, journey_runs.c.status, func.count())
                            .group_by(journey_runs.c.journey_id, journey_runs.c.status)).all()
    assert sorted(tuple(r) for r in left) == [("ret-free", "active", 1), ("ret-once", "active", 1),
                                              ("ret-once", "completed", 1)]


@pytest.fixture(autouse=True)
def _templates(api):
    r = api.put("/v1/templates/welcome", json={"channel": "EMAIL", "subject": "Hi", "text": "Welcome"})
    assert r.status_code in (200, 201), r.text


async def test_the_daily_schedule_runs_the_prune_on_the_worker(api, db, temporal_env):
    import concurrent.futures
    import uuid

    from temporalio.worker import Worker

    from tidings.engine.ops import retention
    from tidings.engine.ops.retention_workflow import SCHEDULE_ID, PruneRetention

    _events(api, [{"user_id": "ann", "name": "view"}])
    set_retention(db, "acme", events_days=1)
    with db.begin() as conn:  # two days pass for the event
        conn.execute(update(events).values(ts=events.c.ts - 2 * DAY_MS))
    client, queue = temporal_env.client, f"q-{uuid.uuid4().hex}"
    async with Worker(client, task_queue=queue, workflows=[PruneRetention], activities=[retention.make_activity(db)],
                      activity_executor=concurrent.futures.ThreadPoolExecutor(2)):
        pruned = await client.execute_workflow(PruneRetention.run, id=f"wf-{uuid.uuid4().hex}", task_queue=queue)
    assert pruned == 1 and _names(db) == []
    from tidings.engine.platform.installation import installation_id

    schedule_id = await retention.ensure_schedule(client, queue, installation_id(db))
    assert await retention.ensure_schedule(client, queue, installation_id(db)) == schedule_id  # idempotent
    assert schedule_id.endswith(SCHEDULE_ID) and schedule_id != SCHEDULE_ID  # this database's own
    desc = await client.get_schedule_handle(schedule_id).describe()
    assert desc.schedule.spec.intervals[0].every.total_seconds() == 86_400
