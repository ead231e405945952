"""A worker killed (SIGKILL) in the middle of a send step: another worker resumes the step, and no
customer gets a second message (the idempotency key is the same on every attempt)."""
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

from engine.events import ingest
from engine.journeys import store
from engine.journeys.testing import AnyCatalog
from engine.schemas import EventIn
from engine.workspaces import ensure_workspace

ONE_SEND = """apiVersion: tidings/v1
kind: Journey
id: once
entry: {event: go}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""
ROOT = Path(__file__).resolve().parents[2]


def spawn(address, url, queue, log) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/journeys/worker_proc.py"), address, url, queue, str(log)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def lines(log: Path) -> list[list[str]]:
    return [l.split() for l in log.read_text().splitlines()] if log.exists() else []


async def test_killed_worker_mid_send_sends_each_customer_once(temporal_dev, runtime_db, tmp_path):
    db, client = runtime_db, temporal_dev.client
    address = client.service_client.config.target_host
    url = str(db.url)
    queue, log = f"kill-{uuid.uuid4().hex[:6]}", tmp_path / "sends.log"
    ws = ensure_workspace(db, "acme")
    store.put_journey(db, ws, ONE_SEND, AnyCatalog())
    ingest(db, ws, [EventIn(name="x", user_id=f"k{i}") for i in range(60)])
    with db.connect() as conn:
        pks = [r[0] for r in conn.execute(text("select id from users"))]
    first = spawn(address, url, queue, log)
    try:
        handle = await store.enter(client, db, ws, "once", pks, task_queue=queue,
                                   cohort_options={"heartbeat_seconds": 2})
        give_up = time.monotonic() + 30
        while len(lines(log)) < 10:
            assert time.monotonic() < give_up
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        before = lines(log)
        assert 10 <= len(before) < 60  # killed mid-step
        second = spawn(address, url, queue, log)
        try:
            await asyncio.wait_for(handle.result(), 60)
        finally:
            second.kill()
            second.wait()
    finally:
        if first.poll() is None:
            first.kill()
    after = lines(log)[len(before):]
    with db.connect() as conn:
        per_user = dict(conn.execute(text("select user_pk, count(*) from event where name = '_email.send' group by user_pk")).all())
    assert per_user == {pk: 1 for pk in pks}  # exactly one message each
    # the retry reused the same keys: what the killed worker had sent came back as duplicates
    first_keys = {k for _, k, s in before if s == "sent"}
    assert first_keys and all(s == "duplicate" for _, k, s in after if k in first_keys)
    assert {k for _, k, s in after if s == "sent"}.isdisjoint(first_keys)
