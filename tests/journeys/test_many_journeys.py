"""Many active journeys in one workspace on the real Temporal dev server: an idle journey costs the worker
nothing, so a step of an unrelated journey is as quick with 200 of them active as with none.

Before the entry watch every idle admission held a worker thread (of 16) in a sleep loop: with 20 active
journeys a send of an unrelated journey waited 20-33 s."""
from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import pytest

from tidings.engine.customers.events import ingest
from tidings.engine.segments.service import put_static_segment
from tidings.engine.journeys import store
from tidings.engine.platform.installation import installation_id
from tidings.engine.journeys.runtime.contracts import admission_workflow_id
from tidings.engine.customers.schemas import EventIn
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template
from tests.eventually import aeventually
from tests.journeys.test_runtime_devserver import count

IDLE_EVENT_JOURNEYS = 200
IDLE_SEGMENT_JOURNEYS = 10

PING = """apiVersion: tidings/v1
kind: Journey
id: {id}
entry: {{event: ping}}
steps:
  - {{id: pong, send: {{channel: EMAIL, template: t}}}}
"""

ON_EVENT = """apiVersion: tidings/v1
kind: Journey
id: {id}
entry: {{event: {event}}}
steps:
  - {{id: hello, send: {{channel: EMAIL, template: t}}}}
"""

ON_SEGMENT = """apiVersion: tidings/v1
kind: Journey
id: {id}
entry: {{segment_entry: vip}}
steps:
  - {{id: hello, send: {{channel: EMAIL, template: t}}}}
"""


async def activate_all(client, db, workspace, queue, sources: list[tuple[str, str]]) -> None:
    for _jid, source in sources:
        store.put_journey(db, workspace, source)
    sem = asyncio.Semaphore(20)

    async def one(jid):
        async with sem:
            await store.activate(client, db, workspace, jid, task_queue=queue)

    await asyncio.gather(*(one(jid) for jid, _ in sources))


async def ping_latencies(db, workspace, jid: str, users: list[str], timeout: float = 15) -> list[float]:
    """Seconds from recording a `ping` to its customer's message being sent, one customer at a time."""
    out = []
    for u in users:
        started = time.monotonic()
        ingest(db, workspace, [EventIn(name="ping", user_id=u)])
        await aeventually(lambda u=u: count(db, "select count(*) from message where status = 'sent' and journey_id = :j "
                                      "and user_pk = (select id from users where user_id = :u)", j=jid, u=u) == 1,
                    max(timeout, 1))
        out.append(time.monotonic() - started)
    return out


@pytest.fixture
async def production_worker(temporal_dev, runtime_db, tmp_path):
    """The worker `tidings worker` runs (tidings.engine.ops.worker.build_worker: its thread pool, its sandbox settings);
    yields its task queue."""
    from tidings.engine.platform.config import Settings
    from tidings.engine.ops.worker import build_worker

    settings = Settings.from_env(TIDINGS_HOME=str(tmp_path / "home"), TIDINGS_DATABASE_URL=runtime_db.test_url,
                                 TIDINGS_TASK_QUEUE=f"many-{uuid.uuid4().hex[:8]}")
    async with build_worker(temporal_dev.client, runtime_db, settings, workflow_failure_exception_types=[Exception]):
        yield settings.task_queue


async def test_a_step_is_as_quick_with_200_idle_journeys_active_as_with_none(temporal_dev, runtime_db,
                                                                             production_worker):
    db, client, dev_worker = runtime_db, temporal_dev.client, production_worker
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    tag = uuid.uuid4().hex[:6]  # admission workflow ids are per (workspace 1, journey): fresh ids per test run
    add_customers(db, workspace, [f"p{i}" for i in range(8)] + [f"w{i}" for i in range(40)] + [f"n{i}" for i in range(3)])
    put_static_segment(db, workspace, "vip", [])
    ping = f"ping-{tag}"
    await activate_all(client, db, workspace, dev_worker, [(ping, PING.format(id=ping))])
    alone = await ping_latencies(db, workspace, ping, ["p0", "p1", "p2", "p3"])

    noise = [(f"e{i}-{tag}", ON_EVENT.format(id=f"e{i}-{tag}", event=f"noise{i}")) for i in range(IDLE_EVENT_JOURNEYS)]
    noise += [(f"s{i}-{tag}", ON_SEGMENT.format(id=f"s{i}-{tag}")) for i in range(IDLE_SEGMENT_JOURNEYS)]
    began = time.monotonic()
    await activate_all(client, db, workspace, dev_worker, noise)
    activated_in, began = time.monotonic() - began, time.monotonic()
    # Starting 210 workflows is a burst of work (on a loaded box, many seconds): pings taken while it lasts
    # measure the burst. Once every admission is idle a ping is as quick as alone again; with admissions
    # that hold worker threads while idle that moment never comes.
    settle_by, spare = time.monotonic() + 45, iter(f"w{i}" for i in range(40))
    while (await ping_latencies(db, workspace, ping, [next(spare)], settle_by - time.monotonic()))[0] > max(alone) + 1.0:
        assert time.monotonic() < settle_by, "steps never got quick again with many journeys active"
    settled_in = time.monotonic() - began
    crowded = await ping_latencies(db, workspace, ping, ["p4", "p5", "p6", "p7"])
    print(f"ping -> sent: alone {[round(x, 2) for x in alone]} s, with {len(noise)} journeys active "
          f"{[round(x, 2) for x in crowded]} s (activated in {activated_in:.1f} s, settled in {settled_in:.1f} s)")
    assert max(crowded) <= max(alone) + 3.0, (alone, crowded)
    assert statistics.median(crowded) <= statistics.median(alone) + 1.0, (alone, crowded)

    # and the idle journeys still admit at once: their watch wakes them
    started = time.monotonic()
    ingest(db, workspace, [EventIn(name=f"noise{i}", user_id=f"n{k}") for k, i in enumerate((0, 99, 199))])
    await aeventually(lambda: count(db, "select count(*) from message where status = 'sent' and journey_id like 'e%'") == 3,
                30)
    assert time.monotonic() - started < 5.0
    # stopping a journey (in the store: what `tidings journeys stop` writes first) ends its idle admission
    for jid, _ in [(ping, None), *noise]:
        await store._status(client, db, workspace, jid, "stopped", entries=False)
    await asyncio.wait_for(client.get_workflow_handle(admission_workflow_id(installation_id(db), workspace.id, noise[-1][0])).result(), 10)
