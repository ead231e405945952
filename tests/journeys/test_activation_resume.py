"""An activation cut short between the store and Temporal (the process died, or Temporal was unreachable)
leaves the journey `active` with nothing running: the next `tidings worker` start finishes it, and a
worker restarted afterwards sends nothing twice (a real SMTP server counts mails per recipient)."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections import Counter

import pytest
from temporalio.client import Client

from engine.ops.devstack import free_port
from engine.journeys import store
from engine.segments.service import SegmentIn, create_segment
from engine.platform.temporal import DATA_CONVERTER
from engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template
from tests.processes import TIDINGS, tidings_env

BROADCAST = """apiVersion: tidings/v1
kind: Journey
id: JOURNEY_ID
entry:
  broadcast: {segment: everyone}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


async def test_worker_start_finishes_an_activation_cut_short(temporal_env, runtime_db, smtp_sink, tmp_path):
    ws = ensure_workspace(runtime_db, "shop")
    customers = [f"c{i}" for i in range(8)]
    add_customers(runtime_db, ws, customers)
    put_template(runtime_db, ws)
    create_segment(runtime_db, ws, SegmentIn(name="Everyone", id="everyone", rule=True))
    # A journey id of its own: workflow ids are made of the workspace's id (1 in every fresh database) and the
    # journey's, so the broadcast of an earlier test on the shared dev server (the SQLite run of this one)
    # was taken for this one's, and nothing was sent: the "sometimes delivers nothing on PostgreSQL" gap.
    journey_id = f"news-{uuid.uuid4().hex[:8]}"
    store.put_journey(runtime_db, ws, BROADCAST.replace("JOURNEY_ID", journey_id))
    queue = f"resume-{uuid.uuid4().hex[:8]}"

    nowhere = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True, data_converter=DATA_CONVERTER)
    with pytest.raises(Exception):  # Temporal out of reach: the store is written, the broadcast not started
        await asyncio.wait_for(store.activate(nowhere, runtime_db, ws, journey_id, task_queue=queue), 20)
    assert store.get_journey(runtime_db, ws, journey_id).status == "active"
    del nowhere

    env = tidings_env(tmp_path / "home", runtime_db.test_url, TIDINGS_TASK_QUEUE=queue,
                      TIDINGS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host)

    async def run_worker(seconds_after: float, until: int) -> None:
        log = open(tmp_path / "worker.log", "ab")
        proc = subprocess.Popen([TIDINGS, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(3600):  # a worker process starting on a loaded box can take a minute
                if len(smtp_sink.mails) >= until:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(seconds_after)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0

    await run_worker(1, len(customers))
    assert Counter(r for _, rcpts, _ in smtp_sink.mails for r in rcpts) == {f"{c}@example.com": 1 for c in customers}
    await run_worker(4, len(customers) + 1)  # a second start: the broadcast is done, nothing is sent again
    assert Counter(r for _, rcpts, _ in smtp_sink.mails for r in rcpts) == {f"{c}@example.com": 1 for c in customers}
