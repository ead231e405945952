"""Concurrent transactional sends share write transactions (tidings.engine.platform.write_queue.write) and still each get their own
answer: an error in one is rolled back alone, and an Idempotency-Key still sends once, also when a server is
killed between handing the mail to SMTP and recording it."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from litestar.testing import TestClient
from sqlalchemy import select

from tidings.api.app import create_app
from tidings.engine.platform import write_queue as serial
from tidings.engine.messaging import transactional
from tidings.engine.platform.errors import Conflict
from tidings.engine.messaging.tables import idempotent_requests
from tidings.engine.workspaces.service import ensure_workspace
from tests.conftest import Api
from .conftest import Inbox, free_port, seed

ROOT = Path(__file__).resolve().parents[2]
BODY = {"channel": "EMAIL", "content": {"subject": "Your code", "text": "Code {{ data.code }}"},
        "data": {"code": "42"}, "recipients": [{"user_id": "ana"}]}


def _claim(workspace_id: int, key: str, fail: bool = False):
    def job(conn):
        conn.execute(idempotent_requests.insert().values(workspace_id=workspace_id, key=key, body_hash="h", created_at=1))
        if fail:
            raise Conflict(f"{key} refused", field="key")
        return key.upper()
    return job


async def test_concurrent_jobs_share_one_transaction_and_a_failing_one_is_rolled_back_alone(db):
    workspace = ensure_workspace(db, "acme")
    keys = [f"k{i}" for i in range(8)]
    outcomes = await asyncio.gather(*(serial.write(db, _claim(workspace.id, k, fail=(k == "k3"))) for k in keys),
                                    return_exceptions=True)
    assert [o if isinstance(o, str) else str(o) for o in outcomes] == [
        "K0", "K1", "K2", "k3 refused", "K4", "K5", "K6", "K7"]
    with db.connect() as conn:
        stored = set(conn.execute(select(idempotent_requests.c.key)).scalars())
    assert stored == set(keys) - {"k3"}
    if db.dialect.name == "sqlite":  # all eight were queued before the first transaction began
        assert serial.committed(db) == (1, 8)
    # a lone job that fails rolls back its whole transaction, and the committer goes on
    with pytest.raises(Conflict):
        await serial.write(db, _claim(workspace.id, "alone", fail=True))
    assert await serial.write(db, _claim(workspace.id, "after")) == "AFTER"
    with db.connect() as conn:
        assert "alone" not in set(conn.execute(select(idempotent_requests.c.key)).scalars())


def _at_once(n: int, call) -> list:
    barrier, out = threading.Barrier(n), [None] * n

    def run(i):
        barrier.wait()
        out[i] = call(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_duplicates_of_one_key_send_once(api, smtp_sink):
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    answers = _at_once(8, lambda i: api.post("/v1/messages", json=BODY, headers={"Idempotency-Key": "order-1"}))
    ok = [r for r in answers if r.status_code == 200]
    assert ok and all(r.status_code == 409 and r.json()["error"]["field"] == "Idempotency-Key"
                      for r in answers if r.status_code != 200), [r.text for r in answers]
    assert len({r.json()["results"][0]["message_id"] for r in ok}) == 1
    assert len(smtp_sink.to("ana@example.com")) == 1
    again = api.post("/v1/messages", json=BODY, headers={"Idempotency-Key": "order-1"})
    assert again.json() == ok[0].json() and len(smtp_sink.mails) == 1
    events = api.get(f"/v1/messages/{ok[0].json()['results'][0]['message_id']}").json()["events"]
    assert [e["name"] for e in events] == ["_email.send"]


def test_concurrent_sends_each_get_their_own_answer_when_one_is_refused(api, smtp_sink):
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    assert api.post("/v1/messages", json=BODY, headers={"Idempotency-Key": "taken"}).status_code == 200

    def one(i):
        if i == 3:  # the same key with another body
            return api.post("/v1/messages", json={**BODY, "data": {"code": "7"}}, headers={"Idempotency-Key": "taken"})
        body = {**BODY, "data": {"code": str(i)}, "recipients": [{"address": f"r{i}@example.com"}]}
        return api.post("/v1/messages", json=body, headers={"Idempotency-Key": f"k{i}"} if i % 2 else {})

    answers = _at_once(8, one)
    assert answers[3].status_code == 409, answers[3].text
    for i, r in enumerate(answers):
        if i != 3:
            assert r.status_code == 200 and r.json()["results"][0]["status"] == "sent", r.text
            [mail] = smtp_sink.to(f"r{i}@example.com")
            assert mail.get_content().strip() == f"Code {i}"
            assert r.json()["results"][0]["message_id"] == mail["X-Tidings-Message-Id"]
    assert len(smtp_sink.mails) == 1 + 7


class HeldInbox(Inbox):
    """Takes the mail, then holds its 250 reply until released: the sender is killed meanwhile."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        await super().handle_DATA(server, session, envelope)
        while not self.release.is_set():
            await asyncio.sleep(0.02)
        return "250 OK"


SERVER = """
import uvicorn
from tidings.api.app import create_app
uvicorn.run(create_app(), host="127.0.0.1", port={port}, log_level="warning")
"""


def test_a_server_killed_between_sending_and_recording_is_taken_over_under_the_same_message_id(
        api, settings, monkeypatch):
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    inbox, smtp_port = HeldInbox(), free_port()
    sink = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    sink.start()
    smtp_env = {"TIDINGS_SMTP_HOST": "127.0.0.1", "TIDINGS_SMTP_PORT": str(smtp_port),
                "TIDINGS_SMTP_SECURITY": "none", "TIDINGS_SMTP_FROM": "Acme <news@acme.example>"}
    port = free_port()
    env = {**os.environ, **smtp_env, "PYTHONPATH": str(ROOT), "TIDINGS_HOME": str(settings.home),
           "TIDINGS_DATABASE_URL": settings.database_url, "TIDINGS_STREAM_WORKER": "0"}
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(port=port)], env=env, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        first = threading.Thread(target=lambda: _post_ignoring_errors(url, api.key))
        first.start()
        deadline = time.monotonic() + 20
        while not inbox.mails and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(inbox.mails) == 1, "the first attempt reached the SMTP server"
        server.send_signal(signal.SIGKILL)  # after the mail was handed over, before its result was recorded
        server.wait(10)
        first.join(10)
        inbox.release.set()
        for k, v in smtp_env.items():
            monkeypatch.setenv(k, v)
        with TestClient(create_app(settings)) as client:
            again = Api(client, api.key)
            busy = again.post("/v1/messages", json=BODY, headers={"Idempotency-Key": "crash-1"})
            assert busy.status_code == 409 and "in progress" in busy.json()["error"]["message"]
            monkeypatch.setattr(transactional, "IN_PROGRESS_TIMEOUT_MS", 0)  # the dead attempt's claim is stale
            taken = again.post("/v1/messages", json=BODY, headers={"Idempotency-Key": "crash-1"})
            assert taken.status_code == 200 and taken.json()["results"][0]["status"] == "sent", taken.text
            mid = taken.json()["results"][0]["message_id"]
            # SMTP cannot take a mail back: the takeover resends it under the first attempt's message id
            # (Message-ID header), so the receiving side sees one message.
            assert [m["X-Tidings-Message-Id"] for m in inbox.to("ana@example.com")] == [mid, mid]
            replay = again.post("/v1/messages", json=BODY, headers={"Idempotency-Key": "crash-1"})
            assert replay.json() == taken.json() and len(inbox.mails) == 2
            got = again.get(f"/v1/messages/{mid}").json()
            assert got["status"] == "sent" and [e["name"] for e in got["events"]] == ["_email.send"]
    finally:
        if server.poll() is None:
            server.kill()
        inbox.release.set()
        sink.stop()


def _post_ignoring_errors(url: str, key: str) -> None:
    try:
        httpx.post(f"{url}/v1/messages", json=BODY, timeout=30,
                   headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "crash-1"})
    except httpx.TransportError:
        pass  # the server was killed under it
