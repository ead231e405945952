"""A broadcast holds a bounded number of cohorts at once and keeps its own history small, whatever the
audience's size: the worker holds every unfinished cohort in memory, and Temporal ends a workflow whose
history passes 50 MB (a 1,000-customer page is ~100 kB of the broadcast's history). Real dev server, real
SMTP server on loopback (slow on purpose: each mail takes 40 ms, so a cohort of 10 takes ~0.4 s)."""
from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text
from temporalio.worker import Replayer

from tidings.engine.journeys import store
from tidings.engine.journeys.runtime.contracts import broadcast_workflow_id
from tidings.engine.ops.devstack import free_port
from tidings.engine.platform.installation import installation_id
from tidings.engine.segments.service import put_static_segment
from tidings.engine.workspaces.service import ensure_workspace
from tests.eventually import aeventually
from tests.journeys.conftest import add_customers, put_template

BROADCAST = """apiVersion: tidings/v1
kind: Journey
id: {jid}
entry: {{broadcast: {{segment: everyone}}}}
steps:
  - {{id: offer, send: {{channel: EMAIL, template: t}}}}
"""


class SlowInbox:
    """Counts recipients; each mail takes 40 ms to accept, as a busy relay does."""

    def __init__(self) -> None:
        self.recipients: Counter[str] = Counter()

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.04)
        self.recipients.update(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def slow_sink(monkeypatch):
    inbox, port = SlowInbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    for name, value in (("TIDINGS_SMTP_HOST", "127.0.0.1"), ("TIDINGS_SMTP_PORT", str(port)),
                        ("TIDINGS_SMTP_SECURITY", "none"), ("TIDINGS_SMTP_FROM", "Acme <news@acme.example>"),
                        ("TIDINGS_SMTP_RATE_LIMIT", "100000")):
        monkeypatch.setenv(name, value)
    yield inbox
    controller.stop()


def rows(db, sql, **kw):
    with db.connect() as conn:
        return conn.execute(text(sql), kw).all()


async def broadcast(db, client, queue, n: int, **options) -> tuple[str, str]:
    """A broadcast to n customers in pages of 10; returns (journey id, its broadcast workflow id)."""
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    jid = f"promo-{uuid.uuid4().hex[:6]}"
    prefix = uuid.uuid4().hex[:4]
    pks = add_customers(db, workspace, [f"{prefix}-{i}" for i in range(n)])
    put_static_segment(db, workspace, "everyone", pks)
    store.put_journey(db, workspace, BROADCAST.format(jid=jid))
    await store.activate(client, db, workspace, jid, task_queue=queue, page_size=10, broadcast=options)
    return jid, broadcast_workflow_id(installation_id(db), workspace.id, jid, 1)


async def test_broadcast_starts_a_cohort_only_when_fewer_than_its_bound_are_unfinished(
        temporal_dev, runtime_db, dev_worker, slow_sink):
    db, client = runtime_db, temporal_dev.client
    jid, wf_id = await broadcast(db, client, dev_worker, 60, cohorts_in_flight=2)
    await aeventually(lambda: sum(slow_sink.recipients.values()) >= 60, 120)
    await aeventually(lambda: rows(db, "select count(*) from journey_run where journey_id = :j and status = 'completed'",
                                   j=jid)[0][0] == 60, 30)
    assert len(slow_sink.recipients) == 60 and set(slow_sink.recipients.values()) == {1}
    # when Temporal started each cohort's workflow and when it closed
    ids = [w for _, w in sorted(rows(db, "select cohort, workflow_id from journey_cohort where journey_id = :j", j=jid))]
    assert len(ids) == 6
    for w in ids:
        await asyncio.wait_for(client.get_workflow_handle(w).result(), 60)
    described = [await client.get_workflow_handle(w).describe() for w in ids]
    spans = [(d.start_time, d.close_time) for d in described]
    # with 2 in flight, cohort k starts once cohort k-2 has closed
    for k in range(2, len(spans)):
        assert spans[k - 2][1] <= spans[k][0], (k, spans)
    # the broadcast's own history replays on this code (it waited on its cohorts: deterministic waits)
    from tidings.engine.journeys.runtime.workflows import JourneyBroadcastWorkflow
    from tidings.engine.platform.temporal import DATA_CONVERTER

    handle = client.get_workflow_handle(wf_id)
    assert await handle.result() == 60
    await Replayer(workflows=[JourneyBroadcastWorkflow], data_converter=DATA_CONVERTER,
                   workflow_failure_exception_types=[Exception]).replay_workflow(await handle.fetch_history())


async def test_broadcast_continues_as_new_when_its_history_grows_and_mails_each_customer_once(
        temporal_dev, runtime_db, dev_worker, slow_sink):
    db, client = runtime_db, temporal_dev.client
    # a 20 kB history bound: a page of 10 customers and its cohort's input pass it every two pages or so
    jid, wf_id = await broadcast(db, client, dev_worker, 50, history_bytes=20_000)
    handle = client.get_workflow_handle(wf_id)
    assert await asyncio.wait_for(handle.result(), 120) == 50  # the last run's count carries the earlier runs'
    await aeventually(lambda: sum(slow_sink.recipients.values()) >= 50, 60)
    await asyncio.sleep(0.5)
    assert len(slow_sink.recipients) == 50 and set(slow_sink.recipients.values()) == {1}
    assert rows(db, "select count(*) from journey_cohort where journey_id = :j", j=jid)[0][0] == 5
    last_run = await handle.fetch_history()  # the latest run: it was continued from an earlier one
    started = last_run.events[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id, "the broadcast never continued as new"
    assert started.input.payloads, "the continued run got no input"


async def test_a_broadcast_whose_cohorts_wait_starts_every_page_at_once(temporal_dev, runtime_db, dev_worker,
                                                                        slow_sink):
    """A cohort that sleeps (here 3 s; in a real journey days) would hold the next page back for as long:
    journeys with a wait step are not bounded, their cohorts all start while the first still waits."""
    db, client = runtime_db, temporal_dev.client
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    jid = f"nap-{uuid.uuid4().hex[:6]}"
    pks = add_customers(db, workspace, [f"{jid}-{i}" for i in range(30)])
    put_static_segment(db, workspace, "everyone", pks)
    store.put_journey(db, workspace, BROADCAST.format(jid=jid).replace(
        "steps:\n", "steps:\n  - {id: nap, wait: 3s}\n"))
    await store.activate(client, db, workspace, jid, task_queue=dev_worker, page_size=10,
                         broadcast={"cohorts_in_flight": 1})
    await aeventually(lambda: sum(slow_sink.recipients[f"{jid}-{i}@example.com"] for i in range(30)) == 30, 90)
    ids = [w for _, w in sorted(rows(db, "select cohort, workflow_id from journey_cohort where journey_id = :j", j=jid))]
    for w in ids:  # every cohort has recorded its sends and closed
        await asyncio.wait_for(client.get_workflow_handle(w).result(), 60)
    spans = [((d := await client.get_workflow_handle(w).describe()).start_time, d.close_time) for w in ids]
    assert len(spans) == 3 and spans[2][0] < spans[0][1], spans  # the last started before the first closed
