"""`tidings worker` with TIDINGS_WORKER_METRICS_PORT: Prometheus scrapes the worker process itself, and its
counters say what that process did (an event-triggered journey's entries admitted, its mails sent)."""
from __future__ import annotations

import asyncio
import subprocess
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tidings.engine.customers.events import ingest
from tidings.engine.customers.schemas import EventIn
from tidings.engine.journeys import store
from tidings.engine.ops.devstack import free_port
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template
from tests.messaging.conftest import smtp_sink  # noqa: F401  (fixture)
from tests.processes import TIDINGS, tidings_env

WELCOME = """apiVersion: tidings/v1
kind: Journey
id: JOURNEY_ID
entry: {event: signed_up}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_worker_serves_its_own_metrics(temporal_env, runtime_db, smtp_sink, tmp_path):  # noqa: F811
    workspace = ensure_workspace(runtime_db, "shop")
    add_customers(runtime_db, workspace, ["ann", "bob"])
    put_template(runtime_db, workspace)
    # A journey id of its own: the admission workflow's id is made of the workspace's id (1 in every fresh
    # database) and the journey's, and one left running on the shared dev server by an earlier test (its
    # worker gone) would be taken for this one's.
    journey_id = f"welcome-{uuid.uuid4().hex[:8]}"
    store.put_journey(runtime_db, workspace, WELCOME.replace("JOURNEY_ID", journey_id))
    queue, port = f"metrics-{uuid.uuid4().hex[:8]}", free_port()
    env = tidings_env(tmp_path / "home", runtime_db.test_url, TIDINGS_TASK_QUEUE=queue,
                      TIDINGS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
                      TIDINGS_WORKER_METRICS_PORT=str(port))
    log = tmp_path / "worker.log"
    with open(log, "ab") as out:
        worker = subprocess.Popen([TIDINGS, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(1200):  # the worker process starts (up to a minute on a loaded box)
                assert worker.poll() is None, log.read_text()[-3000:]
                try:
                    first = await client.get("/metrics")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain")
            assert "# TYPE tidings_sends_total counter" in first.text  # families are there before any sample

            await store.activate(temporal_env.client, runtime_db, workspace, journey_id, task_queue=queue)
            ingest(runtime_db, workspace, [EventIn(name="signed_up", user_id=u) for u in ("ann", "bob")])
            for _ in range(2400):
                if len(smtp_sink.mails) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert sorted(r for _, rcpts, _ in smtp_sink.mails for r in rcpts) == \
                ["ann@example.com", "bob@example.com"], log.read_text()[-3000:]
            await asyncio.sleep(0.5)  # the sends are recorded after the mails leave
            after = samples((await client.get("/metrics")).text)
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 60)
    assert after[("tidings_sends_total", frozenset({("channel", "EMAIL"), ("outcome", "sent")}))] == 2
    assert after[("tidings_journey_admission_lag_seconds_count", frozenset())] == 2
    assert after[("tidings_provider_call_duration_seconds_count", frozenset({("channel", "EMAIL")}))] >= 1
