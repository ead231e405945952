"""A transactional send (POST /v1/messages) while the mail server is down is not lost: it answers `retrying`
with the error, stays `retrying` (GET /v1/messages/{id}), and a real `tidings worker` process resends it
once the server is back; one mail, under the message's own Message-ID, and its send event."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tidings.engine.ops.devstack import free_port
from tests.eventually import aeventually
from tests.faults.harness import MailCounter, Workers, worker_env
from tests.messaging.conftest import seed


class _Address:  # the session's dev server (tests/conftest.py), as the harness's workers expect it
    def __init__(self, address: str):
        self.address = address


async def test_transactional_send_during_smtp_outage_is_resent_by_the_worker(api, db, database_url, tmp_path,
                                                                            monkeypatch, temporal_env):
    port = free_port()
    env = {"TIDINGS_SMTP_HOST": "127.0.0.1", "TIDINGS_SMTP_PORT": str(port), "TIDINGS_SMTP_SECURITY": "none",
           "TIDINGS_SMTP_FROM": "Acme <news@acme.example>", "TIDINGS_DELIVERY_RETRY_MIN_SECONDS": "1",
           "TIDINGS_DELIVERY_RETRY_MAX_SECONDS": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    r = api.post("/v1/messages", json={"channel": "EMAIL", "content": {"subject": "Your code", "text": "42"},
                                       "recipients": [{"user_id": "ana"}, {"address": "bob@example.com"}]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["retrying", "retrying"]  # nobody listens on the port
    assert all("connection" in x["error"].lower() for x in results)
    ana = api.get(f"/v1/messages/{results[0]['message_id']}").json()
    assert ana["status"] == "retrying" and "errno 111" in ana["error"].lower() and ana["next_attempt_at"]
    assert not [e for e in ana["events"] if e["name"] == "_email.failed"]

    counter = MailCounter(port)
    counter.start()  # the mail server is back
    client_address = temporal_env.client.service_client.config.target_host
    workers = Workers(worker_env(database_url=database_url, temporal=_Address(client_address), smtp_port=port,
                                 rate=100, home=tmp_path / "home", queue=f"redeliver-{port}",
                                 TIDINGS_DELIVERY_RETRY_MIN_SECONDS="1"), tmp_path)
    workers.start()
    try:
        await aeventually(lambda: len(counter.mails) >= 2 and all(
            api.get(f"/v1/messages/{x['message_id']}").json()["status"] == "sent" for x in results), 60,
                    "the worker to resend both")
        time.sleep(1.0)
    finally:
        workers.kill()
        counter.stop()
    assert sorted(rcpt for rcpt, _ in counter.mails) == ["ana@example.com", "bob@example.com"]
    ana = api.get(f"/v1/messages/{results[0]['message_id']}").json()
    assert ana["error"] is None and ana["next_attempt_at"] is None and ana["attempts"] >= 4
    assert [e["name"] for e in ana["events"]] == ["_email.send"]
    assert dict(counter.mails)["ana@example.com"].startswith(f"<{results[0]['message_id']}@")


class SlowMailCounter(MailCounter):
    """Takes a while per mail, so that a batch is still being sent when its sender dies."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)


def _smtp_env(port: int) -> dict:
    return {"TIDINGS_SMTP_HOST": "127.0.0.1", "TIDINGS_SMTP_PORT": str(port), "TIDINGS_SMTP_SECURITY": "none",
            "TIDINGS_SMTP_FROM": "Acme <news@acme.example>", "TIDINGS_DELIVERY_RETRY_MIN_SECONDS": "1",
            "TIDINGS_DELIVERY_RETRY_MAX_SECONDS": "2"}


def _statuses(db) -> dict:
    with db.connect() as conn:
        return dict(conn.execute(text("select status, count(*) from message group by status")).all())


async def test_an_api_killed_mid_batch_leaves_nothing_queued_for_good(api, db, database_url, settings, tmp_path,
                                                                      monkeypatch):
    """A real `tidings api` process is SIGKILLed while a POST /v1/messages is sending into a slow SMTP
    server: its rows stay `queued` (nothing recorded them), and once the lease has run out a worker's
    redelivery sends them from their stored content. Per recipient: nobody lost, and only the group in
    flight when the process died can get its mail twice."""
    from tidings.engine.channels.config import load_plugins
    from tidings.engine.messaging.dispatch import RECORD_GROUP
    from tidings.engine.messaging.redelivery import LEASE_MS, redeliver_due

    n = 300
    counter = SlowMailCounter(free_port())
    counter.start()
    for k, v in _smtp_env(counter.port).items():
        monkeypatch.setenv(k, v)
    port = free_port()
    env = {**os.environ, "TIDINGS_HOME": str(settings.home), "TIDINGS_DATABASE_URL": database_url,
           "TIDINGS_STREAM_WORKER": "0"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("tidings")), "api", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        await aeventually(lambda: _healthy(base), 60, "the API to start", every=0.2)
        body = {"channel": "EMAIL", "content": {"subject": "Your code", "text": "42"},
                "recipients": [{"address": f"r{i}@example.com"} for i in range(n)]}
        request = threading.Thread(target=_post_quietly, args=(f"{base}/v1/messages", body, api.key), daemon=True)
        request.start()
        await aeventually(lambda: counter.count() >= 40, 60, "the batch to be under way")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        delivered_before = counter.count()
        assert 0 < delivered_before < n
        assert _statuses(db).get("queued", 0) > 0
        with db.begin() as conn:  # the lease runs out (instead of waiting its two minutes)
            conn.execute(text("update message set updated_at = updated_at - :ms"), {"ms": LEASE_MS + 1})
        plugins = load_plugins()
        give_up = time.monotonic() + 120
        while set(_statuses(db)) != {"sent"}:
            assert time.monotonic() < give_up, _statuses(db)
            await redeliver_due(db, plugins)
            await asyncio.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        counter.stop()
    per = Counter(rcpt for rcpt, _ in counter.mails)
    lost = [i for i in range(n) if per[f"r{i}@example.com"] == 0]
    duplicated = [r for r, c in per.items() if c > 1]
    assert lost == []
    assert len(duplicated) <= min(delivered_before, RECORD_GROUP), (len(duplicated), delivered_before)
    assert _statuses(db) == {"sent": n}


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _post_quietly(url: str, body: dict, key: str) -> None:
    try:
        httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    except httpx.TransportError:
        pass  # the API was killed mid-request


async def test_redelivery_does_not_send_to_endpoints_opted_out_or_deleted_since(api, db, monkeypatch):
    """Sent during an outage, then the customer opts out (or the endpoint is deleted): when the retry is due
    nothing is sent, and the message is failed as opted out."""
    from tidings.engine.channels.config import load_plugins
    from tidings.engine.messaging.redelivery import redeliver_due

    port = free_port()
    for k, v in _smtp_env(port).items():
        monkeypatch.setenv(k, v)
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    seed(api, "bob", endpoints=[("bob-mail", "EMAIL", "bob@example.com")])
    seed(api, "cid", endpoints=[("cid-mail", "EMAIL", "cid@example.com")])
    r = api.post("/v1/messages", json={"channel": "EMAIL", "content": {"subject": "Hi", "text": "hello"},
                                       "recipients": [{"user_id": u} for u in ("ana", "bob", "cid")]})
    assert [x["status"] for x in r.json()["results"]] == ["retrying"] * 3
    ids = {u: x["message_id"] for u, x in zip(("ana", "bob", "cid"), r.json()["results"])}
    assert api.put("/v1/endpoints/ana-mail", json={"channel": "EMAIL", "address": "ana@example.com",
                                                   "user_id": "ana", "opt_out": True}).status_code == 200
    assert api.delete("/v1/endpoints/bob-mail").status_code == 200
    counter = MailCounter(port)
    counter.start()
    try:
        plugins = load_plugins()
        give_up = time.monotonic() + 30
        while "retrying" in _statuses(db):
            assert time.monotonic() < give_up, _statuses(db)
            await redeliver_due(db, plugins)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
    finally:
        counter.stop()
    assert [rcpt for rcpt, _ in counter.mails] == ["cid@example.com"]
    for user in ("ana", "bob"):
        m = api.get(f"/v1/messages/{ids[user]}").json()
        assert m["status"] == "failed" and m["error"].startswith("opted_out"), m
        assert m["next_attempt_at"] is None
    assert api.get(f"/v1/messages/{ids['cid']}").json()["status"] == "sent"


def test_a_mistyped_retry_window_fails_start_up_naming_the_variable():
    from tidings.engine.platform.config import Settings

    for var in ("TIDINGS_DELIVERY_RETRY_HOURS", "TIDINGS_DELIVERY_RETRY_MIN_SECONDS",
                "TIDINGS_DELIVERY_RETRY_MAX_SECONDS"):
        with pytest.raises(ValueError, match=var):
            Settings.from_env(**{var: "8h"})
    assert Settings.from_env(TIDINGS_DELIVERY_RETRY_HOURS="2").delivery_retry.hours == 2.0


async def test_rows_left_untried_while_the_provider_is_down_back_off_like_tried_ones(api, db, monkeypatch):
    """The mail server is down: the first group fails whole and the rest of the batch is left untried. Both
    count the round, so at the next round (still down) every row's delay has grown alike."""
    from tidings.engine.channels.config import load_plugins
    from tidings.engine.platform.clock import now_ms
    from tidings.engine.messaging.dispatch import RECORD_GROUP
    from tidings.engine.messaging.redelivery import redeliver_due

    for k, v in {**_smtp_env(free_port()), "TIDINGS_DELIVERY_RETRY_MIN_SECONDS": "10",
                 "TIDINGS_DELIVERY_RETRY_MAX_SECONDS": "1000"}.items():
        monkeypatch.setenv(k, v)
    n = RECORD_GROUP + 50
    r = api.post("/v1/messages", json={"channel": "EMAIL", "content": {"subject": "Hi", "text": "hello"},
                                       "recipients": [{"address": f"r{i}@example.com"} for i in range(n)]})
    assert {x["status"] for x in r.json()["results"]} == {"retrying"}
    with db.begin() as conn:  # the first round's delay has passed
        conn.execute(text("update message set next_attempt_at = :now"), {"now": now_ms()})
    before = now_ms()  # each next attempt is chosen after this instant (updated_at is written later still)
    assert await redeliver_due(db, load_plugins()) == n
    with db.connect() as conn:
        delays = [d - before for (d,) in conn.execute(text("select next_attempt_at from message"))]
    assert len(delays) == n and min(delays) >= 10_000, sorted(delays)[:5]  # round 2: 10-20 s, not 5-10 s
