"""A transactional send (POST /v1/messages) while the mail server is down is not lost: it answers `retrying`
with the error, stays `retrying` (GET /v1/messages/{id}), and a real `tidings worker` process resends it
once the server is back; one mail, under the message's own Message-ID, and its send event."""
from __future__ import annotations

import time

from engine.devstack import free_port
from tests.faults.harness import MailCounter, Workers, until, worker_env
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
        await until(lambda: len(counter.mails) >= 2 and all(
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
