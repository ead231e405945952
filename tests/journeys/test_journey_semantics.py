"""What a journey's settings mean at run time, on the Temporal dev server, through the real paths: events
ingested as the API ingests them, mail to a real SMTP server, the unsubscribe link of that mail, the events
API and the metrics a user reads. SQLite, and PostgreSQL when TIDINGS_TEST_POSTGRES_URL is set."""
from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from tidings.engine.analytics import metrics
from tidings.engine.customers.events import ingest
from tidings.engine.analytics.funnel import funnel_html
from tidings.engine.journeys import store
from tidings.engine.journeys.runtime.contracts import AdmissionInput
from tidings.engine.journeys.tables import journey_runs, journey_versions
from tidings.engine.customers.schemas import EventIn
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template
from tests.eventually import aeventually
from tests.journeys.test_runtime_devserver import count


def _journey(body: str) -> tuple[str, str]:
    """(id, YAML) of a journey with an id of its own: admission workflows are named per (workspace, journey)
    and every test database numbers its workspace 1."""
    jid = f"j-{uuid.uuid4().hex[:8]}"
    return jid, f"apiVersion: tidings/v1\nkind: Journey\nid: {jid}\n{body}"


async def _activate(db, client, workspace, jid: str, queue: str) -> None:
    # waiting customers look for their events (and exit criteria) every half second
    await store.activate(client, db, workspace, jid, task_queue=queue,
                         admission=AdmissionInput(workspace_id=workspace.id, journey_id=jid, cohort_poll_seconds=0.5))


def _runs(db, workspace, jid: str) -> dict[str, store.RunInfo]:
    return {r.user_id: r for r in store.list_runs(db, workspace, jid)}


def _strip_names(value):
    if isinstance(value, dict):
        return {k: _strip_names(v) for k, v in value.items() if k != "names"}
    if isinstance(value, list):
        return [_strip_names(v) for v in value]
    return value


def _as_stored_before_resolved_names(db, workspace, jid: str) -> None:
    """Rewrite the stored IR as a release before the compiler resolved event names wrote it."""
    with db.begin() as conn:
        where = (journey_versions.c.workspace_id == workspace.id) & (journey_versions.c.journey_id == jid)
        text = conn.execute(select(journey_versions.c.ir).where(where)).scalar_one()
        assert '"names"' in text
        conn.execute(update(journey_versions).where(where).values(ir=json.dumps(_strip_names(json.loads(text)))))


UNSUBSCRIBE_EXITS = """entry: {event: signed_up}
settings:
  exit: {event: unsubscribed}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
  - id: linger
    wait_for: {event: never-sent, timeout: 1h}
  - {id: bye, send: {channel: EMAIL, template: t}}
"""


@pytest.mark.parametrize("stored_ir", ["current", "before-resolved-names"])
async def test_one_click_unsubscribe_from_the_mail_exits_the_journey(temporal_dev, runtime_db, dev_worker, smtp_sink,
                                                                      client, api, stored_ir):
    """`exit: {event: unsubscribed}` (every example journey's) fires on the one-click unsubscribe of the mail
    the journey sent, which records `_email.unsubscribe`; also for a version stored by an older release."""
    db = runtime_db
    workspace = ensure_workspace(db, "acme")  # the workspace of the `api` key
    put_template(db, workspace)
    jid, source = _journey(UNSUBSCRIBE_EXITS)
    store.put_journey(db, workspace, source)
    if stored_ir == "before-resolved-names":
        _as_stored_before_resolved_names(db, workspace, jid)
    await _activate(db, temporal_dev.client, workspace, jid, dev_worker)
    add_customers(db, workspace, ["ann", "bob"])
    ingest(db, workspace, [EventIn(name="signed_up", user_id=u) for u in ("ann", "bob")])
    # both mails are in the inbox and recorded as sent (an unsubscribe of a message not yet recorded finds none)
    await aeventually(lambda: count(db, "select count(*) from event where name = '_email.send'") == 2)
    assert len(smtp_sink.to("ann@example.com")) == 1 and len(smtp_sink.to("bob@example.com")) == 1
    [mail] = smtp_sink.to("ann@example.com")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = mail["List-Unsubscribe"].strip("<>")
    # what a mailbox provider does with List-Unsubscribe-Post (RFC 8058)
    r = client.post(urlsplit(link).path, content="List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert [e["name"] for e in api.get("/v1/events", params={"user_id": "ann", "name": "_email.unsubscribe"})
            .json()["items"]] == ["_email.unsubscribe"]
    await aeventually(lambda: _runs(db, workspace, jid)["ann"].status == "exited", 20)
    runs = _runs(db, workspace, jid)
    assert runs["ann"].exit_reason == "event unsubscribed"
    assert runs["bob"].status == "active" and runs["bob"].current_step == "linger"  # still waiting
    await store.stop(temporal_dev.client, db, workspace, jid)
    assert len(smtp_sink.to("ann@example.com")) == 1


GOAL_WITH_FILTER = """entry: {event: signed_up}
settings:
  goal:
    event: purchased
    within: 7d
    filter: {"==": [{"var": "event.properties.plan"}, "pro"]}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
  - id: linger
    wait_for: {event: never-sent, timeout: 1h}
"""


async def test_goal_filter_decides_conversions_in_runs_and_metrics(temporal_dev, runtime_db, dev_worker):
    db = runtime_db
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    jid, source = _journey(GOAL_WITH_FILTER)
    store.put_journey(db, workspace, source)
    await _activate(db, temporal_dev.client, workspace, jid, dev_worker)
    add_customers(db, workspace, ["basic", "pro", "idle"])
    ingest(db, workspace, [EventIn(name="signed_up", user_id=u) for u in ("basic", "pro", "idle")])
    await aeventually(lambda: count(db, "select count(*) from message where status = 'sent' and journey_id = :j", j=jid) == 3)
    ingest(db, workspace, [EventIn(name="purchased", user_id="basic", attributes={"plan": "basic"}),  # not the goal
                    EventIn(name="purchased", user_id="pro", attributes={"plan": "pro"})])
    await aeventually(lambda: _runs(db, workspace, jid)["pro"].converted_at is not None)
    runs = _runs(db, workspace, jid)
    assert runs["basic"].converted_at is None and runs["idle"].converted_at is None
    assert count(db, "select count(*) from event where name = '_journey.converted'") == 1
    m = metrics.journey_metrics(db, workspace, jid)
    assert m["goal"] == {"event": "purchased", "within_seconds": 7 * 86400,
                         "filter": {"==": [{"var": "event.properties.plan"}, "pro"]}}
    assert m["totals"]["metrics"]["sent"]["customers"] == 3
    assert m["totals"]["metrics"]["converted"]["customers"] == 1 and m["totals"]["rates"]["conversion"] == 0.3333
    [hello] = m["steps"]
    assert hello["metrics"]["converted"]["customers"] == 1
    assert "3 customers sent, 0 opened, 0 clicked, 1 converted" in funnel_html(m)
    # naming the goal explicitly counts every event of that name, without the journey's filter
    assert metrics.journey_metrics(db, workspace, jid, goal="purchased")["totals"]["metrics"]["converted"]["customers"] == 2
    await store.stop(temporal_dev.client, db, workspace, jid)


HOLDOUT = """entry: {event: signed_up}
steps:
  - {id: control, holdout: {percent: 50}}
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


async def test_holdout_records_journey_holdout_events_seen_by_the_events_api(temporal_dev, runtime_db, dev_worker,
                                                                             api):
    from tidings.engine.journeys.runtime.contracts import bucket

    db = runtime_db
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    jid, source = _journey(HOLDOUT)
    store.put_journey(db, workspace, source)
    await _activate(db, temporal_dev.client, workspace, jid, dev_worker)
    users = [f"h{i}" for i in range(16)]
    pks = dict(zip(users, add_customers(db, workspace, users)))
    ingest(db, workspace, [EventIn(name="signed_up", user_id=u) for u in users])
    await aeventually(lambda: count(db, "select count(*) from journey_run where journey_id = :j and status <> 'active'",
                              j=jid) == len(users))
    runs = _runs(db, workspace, jid)
    held = {u for u, r in runs.items() if r.status == "held_out"}
    assert held == {u for u in users if bucket(jid, pks[u], "control") < 50} and 0 < len(held) < len(users)
    items = api.get("/v1/events", params={"name": "_journey.holdout", "limit": 100}).json()["items"]
    assert sorted(e["user_id"] for e in items) == sorted(held)
    with db.connect() as conn:
        run_ids = dict(conn.execute(select(journey_runs.c.user_pk, journey_runs.c.id)
                                    .where(journey_runs.c.journey_id == jid)).all())
    for e in items:
        assert e["attributes"] == {"journey_id": jid, "journey_version": 1, "step_id": "control",
                                   "run_id": run_ids[pks[e["user_id"]]]}
        assert e["id"] == f"holdout:{e['attributes']['run_id']}"
    # the control group of the metrics is the same customers
    assert metrics.journey_metrics(db, workspace, jid, goal="purchased")["control"]["customers"] == len(held)
    await store.stop(temporal_dev.client, db, workspace, jid)


SEGMENT_ENTRY = """entry: {segment_entry: trial}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


async def test_segment_entry_admits_those_who_join_after_activation_only(temporal_dev, runtime_db, dev_worker, api):
    """As docs/journeys.md says: customers already in the segment when the journey is activated never enter."""
    db = runtime_db
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    add_customers(db, workspace, ["early", "late"])
    r = api.post("/v1/segments", json={"id": "trial", "name": "trial",
                                       "rule": {"==": [{"var": "attributes.plan"}, "trial"]}})
    assert r.status_code == 201, r.text
    assert api.put("/v1/users/early", json={"attributes": {"plan": "trial"}}).status_code == 200
    jid, source = _journey(SEGMENT_ENTRY)
    store.put_journey(db, workspace, source)
    await _activate(db, temporal_dev.client, workspace, jid, dev_worker)
    assert api.put("/v1/users/late", json={"attributes": {"plan": "trial"}}).status_code == 200
    await aeventually(lambda: "late" in _runs(db, workspace, jid) and _runs(db, workspace, jid)["late"].status == "completed")
    assert sorted(m["user_id"] for m in api.get("/v1/segments/trial/members").json()["items"]) == ["early", "late"]
    assert set(_runs(db, workspace, jid)) == {"late"}
    await store.stop(temporal_dev.client, db, workspace, jid)


WAIT_FOR_UNSUBSCRIBE = """apiVersion: tidings/v1
kind: Journey
id: listen
entry: {event: signed_up}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
  - id: listen
    wait_for: {event: unsubscribed, timeout: 1d, on_event: gone, on_timeout: stayed}
  - {id: stayed, exit: {reason: stayed}}
  - {id: gone, exit: {reason: unsubscribed}}
"""


async def test_wait_for_a_message_event_name_moves_on_an_unsubscribe_recorded_by_tracking(journey_test):
    """`wait_for: {event: unsubscribed}` reads the same events as the exit criterion (time-skipping server)."""
    from tidings.engine.messaging import tracking
    from tidings.engine.messaging.dispatch import public_url

    journey_test.template("t", subject="Hi", text="Hello")
    await journey_test.put(WAIT_FOR_UNSUBSCRIBE)
    ann, bob = journey_test.customer("ann"), journey_test.customer("bob")
    handle = await journey_test.start("listen", [ann, bob], poll_seconds=3600)
    await journey_test.sleep(120)
    [mail] = [m for m in journey_test.outbox("listen") if m["user_id"] == "ann"]
    assert mail["unsubscribe_url"].startswith(public_url() + "/t/u/")
    token = urlsplit(mail["unsubscribe_url"]).path.rsplit("/", 1)[-1]
    tracking.unsubscribe(journey_test.db, token, one_click=True, user_agent="test", ip_address="127.0.0.1")
    await handle.result()
    runs = journey_test.runs("listen")
    assert (runs["ann"].exit_reason, runs["bob"].exit_reason) == ("unsubscribed", "stayed")
