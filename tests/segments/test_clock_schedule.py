"""Clock-dependent segments are re-evaluated by a Temporal workflow (run by the schedule)."""
from __future__ import annotations

import concurrent.futures
import uuid

from sqlalchemy import text
from temporalio.worker import Worker

from tidings.engine.platform.installation import installation_id
from tidings.engine.segments.refresh import ensure_schedule, make_activity
from tidings.engine.segments.refresh_workflow import SCHEDULE_ID, RefreshClockSegments


async def test_schedule_workflow_moves_people_out_of_a_window(api, db, temporal_env):
    api.post("/v1/events", json={"events": [{"user_id": "ann", "name": "login"}, {"user_id": "bob", "name": "login"}]})
    r = api.post("/v1/segments", json={"id": "recent", "name": "recent", "rule": {
        "last_performed": {"event": "login", "within": "1d"}}})
    assert r.json()["size"] == 2
    with db.begin() as conn:  # two days pass for ann
        conn.execute(text("UPDATE event SET ts = ts - 172800000 WHERE user_pk = "
                          "(SELECT id FROM users WHERE user_id = 'ann')"))
    assert api.get("/v1/segments/recent").json()["size"] == 2  # nothing told it yet
    queue = f"q-{uuid.uuid4().hex}"
    client = temporal_env.client
    async with Worker(client, task_queue=queue, workflows=[RefreshClockSegments], activities=[make_activity(db)],
                      activity_executor=concurrent.futures.ThreadPoolExecutor(4)):
        changed = await client.execute_workflow(RefreshClockSegments.run, id=f"wf-{uuid.uuid4().hex}", task_queue=queue)
    assert changed == 1
    members = api.get("/v1/segments/recent/members").json()["items"]
    assert [m["user_id"] for m in members] == ["bob"]
    names = [e["name"] for e in api.get("/v1/events", params={"user_id": "ann"}).json()["items"]]
    assert "_segment.exit" in names
    schedule_id = await ensure_schedule(client, queue, installation_id(db))
    assert await ensure_schedule(client, queue, installation_id(db)) == schedule_id  # idempotent
    assert schedule_id.endswith(SCHEDULE_ID) and schedule_id != SCHEDULE_ID  # this database's own
    desc = await client.get_schedule_handle(schedule_id).describe()
    assert desc.schedule.spec.intervals[0].every.total_seconds() == 300
