"""Two Tidings installations on one Temporal server (staging beside production, or a database created
again while the embedded Temporal kept its history) each run their own journeys: the same workspace and
journey ids in both never meet, so the second database's broadcast is not refused as "already run" (a
real SMTP server counts the mails per recipient). A database that ran journeys before installation tokens
existed keeps the ids its running workflows have."""
from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections import Counter

from sqlalchemy import insert
from temporalio.worker import Worker

from tidings.engine.journeys import store
from tidings.engine.journeys.runtime.activities import JourneyActivities
from tidings.engine.journeys.runtime.contracts import broadcast_workflow_id
from tidings.engine.journeys.runtime.workflows import JourneyAdmissionWorkflow, JourneyBroadcastWorkflow, JourneyCohortWorkflow
from tidings.engine.journeys.tables import journey_cohorts
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.platform.installation import installation_id
from tidings.engine.segments.service import SegmentIn, create_segment
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template

BROADCAST = """apiVersion: tidings/v1
kind: Journey
id: news
entry:
  broadcast: {segment: everyone}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


def _seed(db, domain: str) -> None:
    workspace = ensure_workspace(db, "shop")
    add_customers(db, workspace, ["a", "b", "c"], address="{}@" + domain)
    put_template(db, workspace)
    create_segment(db, workspace, SegmentIn(name="Everyone", id="everyone", rule=True))
    store.put_journey(db, workspace, BROADCAST)


async def _broadcast(client, db, inbox, mails_after: int) -> None:
    """Activate the journey with a worker of this database's own, until the inbox holds `mails_after` mails."""
    queue = f"inst-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue,
                      workflows=[JourneyCohortWorkflow, JourneyAdmissionWorkflow, JourneyBroadcastWorkflow],
                      activities=JourneyActivities(db).all(),
                      activity_executor=concurrent.futures.ThreadPoolExecutor(8)):
        workspace = ensure_workspace(db, "shop")
        await store.activate(client, db, workspace, "news", task_queue=queue)
        handle = client.get_workflow_handle(broadcast_workflow_id(installation_id(db), workspace.id, "news", 1))
        await asyncio.wait_for(handle.result(), 60)
        for _ in range(1200):  # its cohort sends after the broadcast returns; bounded, breaks once they are in
            if len(inbox.mails) >= mails_after:
                break
            await asyncio.sleep(0.05)


async def test_a_database_created_again_broadcasts_on_the_same_temporal_server(temporal_dev, runtime_db, smtp_sink,
                                                                                tmp_path):
    _seed(runtime_db, "first.example")
    await _broadcast(temporal_dev.client, runtime_db, smtp_sink, 3)

    again = make_engine(f"sqlite:///{tmp_path / 'again.db'}")  # a new database: same workspace, same journey id
    try:
        migrate(again)
        assert installation_id(again) not in ("", installation_id(runtime_db))
        _seed(again, "again.example")
        await _broadcast(temporal_dev.client, again, smtp_sink, 6)
    finally:
        again.dispose()
    per_recipient = Counter(r for _, rcpts, _ in smtp_sink.mails for r in rcpts)
    assert per_recipient == {f"{u}@{d}": 1 for u in "abc" for d in ("first.example", "again.example")}


def test_a_database_that_ran_journeys_before_tokens_keeps_its_ids(tmp_path):
    db = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        for before_tokens in ("0002_segments", "0004_journeys", "0008_delivery_retry"):
            migrate(db, before_tokens)
        workspace = ensure_workspace(db, "shop")
        with db.begin() as conn:
            conn.execute(insert(journey_cohorts).values(workspace_id=workspace.id, journey_id="news", cohort=0, version=1,
                                                        claim_key="journey/1/news/v1/broadcast/x",
                                                        workflow_id="journey/1/news/v1/cohort/0", size=1,
                                                        created_at=now_ms()))
        migrate(db)
        assert installation_id(db) == ""
        assert broadcast_workflow_id(installation_id(db), workspace.id, "news", 1) == f"journey/{workspace.id}/news/v1/broadcast"
    finally:
        db.dispose()
