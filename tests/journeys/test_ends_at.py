"""`settings.ends_at` in YAML on the real Temporal dev server: from that instant nobody enters (an event journey's
late entries are refused as `journey_ended`; a broadcast firing after it admits nobody), and customers already
inside finish. Mail goes to a real SMTP sink on loopback."""
from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from tidings.engine.customers.events import ingest
from tidings.engine.customers.schemas import EventIn
from tidings.engine.journeys import store
from tidings.engine.journeys.runtime.contracts import broadcast_workflow_id
from tidings.engine.platform.installation import installation_id
from tidings.engine.segments.service import put_static_segment
from tidings.engine.workspaces.service import ensure_workspace
from tests.eventually import aeventually
from tests.journeys.conftest import add_customers, put_template


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _count(db, sql: str, **kw):
    with db.connect() as conn:
        return conn.execute(text(sql), kw).scalar()




async def test_an_event_journey_refuses_entries_after_ends_at_and_lets_the_inside_finish(
        temporal_dev, runtime_db, dev_worker, smtp_sink):
    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    jid = f"ending-{uuid.uuid4().hex[:6]}"  # the admission workflow id is per (workspace, journey)
    end = datetime.now(UTC) + timedelta(seconds=6)
    store.put_journey(db, workspace, f"""apiVersion: tidings/v1
kind: Journey
id: {jid}
entry: {{event: signed_up}}
settings:
  ends_at: "{_iso(end)}"
steps:
  - {{id: hello, send: {{channel: EMAIL, template: t}}}}
  - {{id: pause, wait: 10s}}
  - {{id: bye, send: {{channel: EMAIL, template: t}}}}
""")
    await store.activate(client, db, workspace, jid, task_queue=dev_worker)
    add_customers(db, workspace, ["early", "late"])
    ingest(db, workspace, [EventIn(name="signed_up", user_id="early")])
    await aeventually(lambda: smtp_sink.per_recipient()["early@example.com"] == 1, 60)
    while datetime.now(UTC) < end + timedelta(seconds=1):
        await asyncio.sleep(0.2)
    ingest(db, workspace, [EventIn(name="signed_up", user_id="late")])
    # the late entry is claimed and refused, named in its cohort
    await aeventually(lambda: _count(db, "select count(*) from journey_entry where journey_id = :j", j=jid) == 0, 30)
    await aeventually(lambda: _count(db, "select count(*) from journey_run where journey_id = :j "
                                         "and status = 'completed'", j=jid) == 1, 60)
    await asyncio.sleep(1)
    assert smtp_sink.per_recipient() == {"early@example.com": 2}
    assert _count(db, "select count(*) from journey_run where journey_id = :j", j=jid) == 1
    with db.connect() as conn:
        refused = [r[0] for r in conn.execute(text("select refused from journey_cohort where journey_id = :j"),
                                              {"j": jid})]
    refused = [json.loads(r) if isinstance(r, str) else r for r in refused]  # SQLite gives the JSON text
    assert {"journey_ended": 1} in refused


async def test_a_broadcast_activated_after_ends_at_admits_nobody(temporal_dev, runtime_db, dev_worker, smtp_sink):
    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    put_static_segment(db, workspace, "everyone", add_customers(db, workspace, ["ann", "bob"]))
    for jid, end in (("over", datetime.now(UTC) - timedelta(minutes=1)), ("open", datetime.now(UTC) + timedelta(days=1))):
        store.put_journey(db, workspace, f"""apiVersion: tidings/v1
kind: Journey
id: {jid}
entry: {{broadcast: {{segment: everyone}}}}
settings: {{ends_at: "{_iso(end)}"}}
steps:
  - {{id: hello, send: {{channel: EMAIL, template: t}}}}
""")
        await store.activate(client, db, workspace, jid, task_queue=dev_worker)
    await aeventually(lambda: len(smtp_sink.mails) == 2, 60)  # `open` mails both
    over = broadcast_workflow_id(installation_id(db), workspace.id, "over", 1)
    assert await client.get_workflow_handle(over).result() == 0  # `over` ran, and started no cohort
    await asyncio.sleep(1)
    assert smtp_sink.per_recipient() == {"ann@example.com": 1, "bob@example.com": 1}
    assert _count(db, "select count(*) from journey_run where journey_id = 'over'") == 0
