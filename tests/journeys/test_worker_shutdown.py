"""SIGTERM to `tidings worker` mid-send: the send step in flight is finished (each customer gets one mail),
the process exits 0 within the shutdown timeout, its plugins' shutdown hooks run (the SMTP plugin says QUIT
on its pooled connections), and the next worker sends nothing twice."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections import Counter

import pytest
from aiosmtpd.controller import Controller

from tidings.engine.ops.devstack import free_port
from tidings.engine.journeys import store
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template
from tests.messaging.conftest import Inbox
from tests.eventually import aeventually
from tests.processes import TIDINGS, tidings_env


class SlowInbox(Inbox):
    """Accepts a mail every 0.2 s, so a send step of 15 mails is in flight for ~3 s."""

    quits = 0

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.2)
        return await super().handle_DATA(server, session, envelope)

    async def handle_QUIT(self, server, session, envelope):
        self.quits += 1
        return "221 Bye"


BROADCAST = """apiVersion: tidings/v1
kind: Journey
id: news
entry:
  broadcast: {segment: everyone}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


@pytest.fixture
def slow_smtp(monkeypatch):
    inbox, port = SlowInbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    for name, value in (("TIDINGS_SMTP_HOST", "127.0.0.1"), ("TIDINGS_SMTP_PORT", str(port)),
                        ("TIDINGS_SMTP_SECURITY", "none"), ("TIDINGS_SMTP_FROM", "Acme <news@acme.example>"),
                        ("TIDINGS_SMTP_RATE_LIMIT", "1000")):
        monkeypatch.setenv(name, value)
    yield inbox
    controller.stop()


async def test_sigterm_to_the_worker_finishes_the_send_in_flight(temporal_env, runtime_db, slow_smtp, tmp_path):
    from tidings.engine.segments.service import SegmentIn, create_segment

    workspace = ensure_workspace(runtime_db, "shop")
    customers = [f"c{i}" for i in range(15)]
    add_customers(runtime_db, workspace, customers)
    put_template(runtime_db, workspace)
    create_segment(runtime_db, workspace, SegmentIn(name="Everyone", id="everyone", rule=True))
    store.put_journey(runtime_db, workspace, BROADCAST)
    queue = f"term-{uuid.uuid4().hex[:8]}"
    env = tidings_env(tmp_path / "home", runtime_db.test_url, TIDINGS_TASK_QUEUE=queue,
                      TIDINGS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
                      TIDINGS_SHUTDOWN_TIMEOUT="60")

    def worker() -> subprocess.Popen:
        log = open(tmp_path / "worker.log", "ab")
        return subprocess.Popen([TIDINGS, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)

    first = worker()
    try:
        await store.activate(temporal_env.client, runtime_db, workspace, "news", task_queue=queue)
        for _ in range(2400):  # the worker process starts first (up to 2 min on a loaded box)
            if slow_smtp.mails:
                break
            await asyncio.sleep(0.05)
        assert slow_smtp.mails, (tmp_path / "worker.log").read_text()[-3000:]
        assert len(slow_smtp.mails) < len(customers)  # the send step is in flight
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(first.wait, 90)
        assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
        assert time.monotonic() - started < 60
        assert len(slow_smtp.mails) == len(customers)  # the step in flight was finished before the exit
        assert slow_smtp.quits >= 1  # the SMTP plugin's shutdown hook closed its pool politely
    finally:
        if first.poll() is None:
            first.kill()
    second = worker()  # takes over whatever is left: nothing may go twice
    try:
        # once it polls (a SIGTERM during its start-up, before it handles signals, would kill it), 5 s more
        await aeventually(lambda: (tmp_path / "worker.log").read_text().count("worker ready") >= 2, 180,
                          what=f"the second worker's start: {(tmp_path / 'worker.log').read_text()[-2000:]}")
        await asyncio.sleep(5)
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 60) == 0
    per_recipient = Counter(r for _, rcpts, _ in slow_smtp.mails for r in rcpts)
    assert per_recipient == {f"{c}@example.com": 1 for c in customers}
