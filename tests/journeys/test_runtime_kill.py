"""A worker killed (SIGKILL) in the middle of a send step: another worker resumes the step, and every
customer ends with exactly one delivered message.

The workspace routes EMAIL to the outbox channel with a rate limit of 20 messages/s, so the step's 60
messages are delivered two at a time over ~3 s and the kill lands mid-step. The killed attempt recorded
each chunk as it was delivered and left the rest of its claim (message rows) `queued`; the retry resumes
those under the same message ids, and the outbox keeps one copy per message id. Counted: outbox rows (what was delivered), not send events."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from tidings.engine.channels.config import ChannelPut, load_plugins, put_channel
from tidings.engine.channels.contract import ChannelType
from tidings.engine.journeys import store
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template

ONE_SEND = """apiVersion: tidings/v1
kind: Journey
id: once
entry: {event: go}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""
ROOT = Path(__file__).resolve().parents[2]


def spawn(address, url, queue) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/journeys/worker_proc.py"), address, url, queue],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def count(db, sql) -> int:
    with db.connect() as conn:
        return conn.execute(text(sql)).scalar()


async def test_killed_worker_mid_send_delivers_each_customer_exactly_once(temporal_dev, runtime_db):
    db, client = runtime_db, temporal_dev.client
    address = client.service_client.config.target_host
    queue = f"kill-{uuid.uuid4().hex[:6]}"
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    put_channel(db, load_plugins(), workspace, "outbox", ChannelPut(rate_limit=20, channel_types=[ChannelType.EMAIL]))
    store.put_journey(db, workspace, ONE_SEND)
    pks = add_customers(db, workspace, [f"k{i}" for i in range(60)])
    first = spawn(address, db.test_url, queue)
    second = None
    try:
        handle = await store.enter(client, db, workspace, "once", pks, task_queue=queue,
                                   cohort_options={"heartbeat_seconds": 2})
        give_up = time.monotonic() + 30
        while count(db, "select count(*) from outbox_message") < 10:
            assert time.monotonic() < give_up
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        delivered_before = count(db, "select count(*) from outbox_message")
        assert 10 <= delivered_before < 60  # killed mid-step
        # recorded chunk by chunk: what was delivered is `sent` already, but for the chunk in flight (2 mails)
        recorded = count(db, "select count(*) from message where status = 'sent'")
        assert delivered_before - 2 <= recorded <= delivered_before
        assert count(db, "select count(*) from message where status = 'queued'") == 60 - recorded
        second = spawn(address, db.test_url, queue)
        await asyncio.wait_for(handle.result(), 60)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    with db.connect() as conn:
        delivered = dict(conn.execute(text(
            "select m.user_pk, count(*) from outbox_message o join message m on m.message_id = o.message_id "
            "group by m.user_pk")).all())
        statuses = conn.execute(text("select status, count(*) from message group by status")).all()
        sends = dict(conn.execute(text(
            "select user_pk, count(*) from event where name = '_email.send' group by user_pk")).all())
    assert delivered == {pk: 1 for pk in pks}  # exactly one delivered message each
    assert statuses == [("sent", 60)]  # one message row per customer, resumed rather than duplicated
    assert sends == {pk: 1 for pk in pks}
    outcomes = {s.get("outcome") for r in store.list_runs(db, workspace, "once", limit=1000) for s in r.steps
                if s["step"] == "hello"}
    assert outcomes == {"sent"}  # the retry sent (resumed), it did not report `duplicate`
