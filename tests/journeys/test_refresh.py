"""`broadcast: {refresh}` in YAML on the real Temporal dev server: the segment's members at activation, then at
each refresh whoever joined since (the entry limit keeps out who already entered). The refresh is triggered on
the journey's Temporal schedule rather than waited for; mail goes to a real SMTP sink on loopback."""
from __future__ import annotations

import asyncio
from collections import Counter

from temporalio.client import ScheduleOverlapPolicy

from tidings.engine.journeys import store
from tidings.engine.journeys.runtime.contracts import schedule_id
from tidings.engine.platform.installation import installation_id
from tidings.engine.segments.service import put_static_segment
from tidings.engine.workspaces.service import ensure_workspace
from tests.eventually import aeventually
from tests.journeys.conftest import add_customers, put_template

REFRESH = """apiVersion: tidings/v1
kind: Journey
id: news
entry: {broadcast: {segment: pros, refresh: 1h}}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


async def test_a_refreshing_broadcast_admits_the_members_now_and_the_new_ones_at_each_refresh(
        temporal_dev, runtime_db, dev_worker, smtp_sink):
    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    ann, bob = add_customers(db, workspace, ["ann", "bob"])
    put_static_segment(db, workspace, "pros", [ann])
    store.put_journey(db, workspace, REFRESH)
    await store.activate(client, db, workspace, "news", task_queue=dev_worker)

    def mails() -> Counter:
        return Counter(r for _, rcpts, _ in smtp_sink.mails for r in rcpts)
    await aeventually(lambda: mails() == {"ann@example.com": 1}, 60)  # at activation, not in an hour
    put_static_segment(db, workspace, "pros", [ann, bob])
    # the refresh, now; ALLOW_ALL: not skipped while the activation's run is still finishing. A scheduled run's
    # workflow id is its start to the second: one more in the same second would be taken for a retry of it
    await asyncio.sleep(1.1)
    sched = client.get_schedule_handle(schedule_id(installation_id(db), workspace.id, "news", 1))
    await sched.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    await aeventually(lambda: mails()["bob@example.com"] == 1, 60)
    await asyncio.sleep(1.5)  # any mail that must not come: ann entered at activation
    assert mails() == {"ann@example.com": 1, "bob@example.com": 1}
