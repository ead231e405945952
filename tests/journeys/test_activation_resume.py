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

from tidings.engine.ops.devstack import free_port
from tidings.engine.journeys import store
from tidings.engine.segments.service import SegmentIn, create_segment
from tidings.engine.platform.temporal import DATA_CONVERTER
from tidings.engine.workspaces.service import ensure_workspace
from tests.eventually import aeventually
from tests.journeys.conftest import add_customers, put_template
from tests.processes import TIDINGS, tidings_env

BROADCAST = """apiVersion: tidings/v1
kind: Journey
id: news
entry:
  broadcast: {segment: everyone}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


async def test_worker_start_finishes_an_activation_cut_short(temporal_env, runtime_db, smtp_sink, tmp_path):
    workspace = ensure_workspace(runtime_db, "shop")
    customers = [f"c{i}" for i in range(8)]
    add_customers(runtime_db, workspace, customers)
    put_template(runtime_db, workspace)
    create_segment(runtime_db, workspace, SegmentIn(name="Everyone", id="everyone", rule=True))
    # The same workspace and journey ids as the SQLite run of this test on the shared dev server: each
    # database's installation token keeps their Temporal ids apart (tests/journeys/test_installations.py).
    journey_id = "news"
    store.put_journey(runtime_db, workspace, BROADCAST)
    queue = f"resume-{uuid.uuid4().hex[:8]}"

    nowhere = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True, data_converter=DATA_CONVERTER)
    with pytest.raises(Exception):  # noqa: B017  # Temporal out of reach: the store is written, the broadcast not started
        await asyncio.wait_for(store.activate(nowhere, runtime_db, workspace, journey_id, task_queue=queue), 20)
    assert store.get_journey(runtime_db, workspace, journey_id).status == "active"
    del nowhere

    env = tidings_env(tmp_path / "home", runtime_db.test_url, TIDINGS_TASK_QUEUE=queue,
                      TIDINGS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host)

    log_path = tmp_path / "worker.log"

    async def run_worker(start: int, seconds_after_ready: float, mails: int) -> None:
        """One `tidings worker` process (the `start`-th): runs until it printed that it is ready (its resumed
        activations are started by then) and `mails` mails are in, then `seconds_after_ready` more."""
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([TIDINGS, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            await aeventually(lambda: log_path.read_text().count("worker ready") >= start, 180,
                              what=f"worker start {start}: {log_path.read_text()[-2000:]}")
            await aeventually(lambda: len(smtp_sink.mails) >= mails, 120, what=f"{mails} mails")
            await asyncio.sleep(seconds_after_ready)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0, log_path.read_text()[-3000:]

    await run_worker(1, 1, len(customers))
    assert Counter(r for _, rcpts, _ in smtp_sink.mails for r in rcpts) == {f"{c}@example.com": 1 for c in customers}
    await run_worker(2, 4, len(customers))  # a second start: the broadcast is done, nothing is sent again
    assert Counter(r for _, rcpts, _ in smtp_sink.mails for r in rcpts) == {f"{c}@example.com": 1 for c in customers}
