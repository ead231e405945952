"""A journey send whose mail server is down: the members wait at the send step (`retrying`, the run still
active) and get their mail once the server is back; a member who exits meanwhile gets nothing, and its
message is failed with the reason instead of staying `retrying` forever."""
from __future__ import annotations

import asyncio

from sqlalchemy import select, text

from tidings.engine.ops.devstack import free_port
from tidings.engine.customers.events import ingest
from tidings.engine.journeys import store
from tidings.engine.messaging.tables import messages
from tidings.engine.customers.schemas import EventIn
from tidings.engine.workspaces.service import ensure_workspace
from tests.eventually import aeventually
from tests.faults.harness import MailCounter
from tests.journeys.conftest import add_customers, put_template

JOURNEY = """apiVersion: tidings/v1
kind: Journey
id: nudge
entry: {event: go}
settings:
  exit: {event: bye}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


def rows(db, sql):
    with db.connect() as conn:
        return conn.execute(text(sql)).all()


async def test_members_wait_at_the_send_step_until_the_mail_server_is_back(temporal_dev, runtime_db, dev_worker,
                                                                          monkeypatch):
    db, client = runtime_db, temporal_dev.client
    port = free_port()
    for k, v in {"TIDINGS_SMTP_HOST": "127.0.0.1", "TIDINGS_SMTP_PORT": str(port), "TIDINGS_SMTP_SECURITY": "none",
                 "TIDINGS_SMTP_FROM": "Acme <news@acme.example>", "TIDINGS_DELIVERY_RETRY_MIN_SECONDS": "1",
                 "TIDINGS_DELIVERY_RETRY_MAX_SECONDS": "2"}.items():
        monkeypatch.setenv(k, v)
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    store.put_journey(db, workspace, JOURNEY)
    pks = add_customers(db, workspace, ["stay", "leave"])
    handle = await store.enter(client, db, workspace, "nudge", pks, task_queue=dev_worker)
    await aeventually(lambda: rows(db, "select status, count(*) from message group by status") == [("retrying", 2)], 30,
                "both messages retrying")
    await asyncio.sleep(1.5)  # a retry round or so with the server still down
    with db.connect() as conn:  # resent from the template by the workflow: no rendered copy is kept
        assert conn.execute(select(messages.c.content)).scalars().all() == [None, None]
    assert rows(db, "select status, count(*) from journey_run group by status") == [("active", 2)]
    errors = [e for (e,) in rows(db, "select error from message")]
    assert all("Errno 111" in e for e in errors), errors  # the last error, visible while retrying
    steps = [s for r in store.list_runs(db, workspace, "nudge") for s in r.steps if s["step"] == "hello"]
    assert {s.get("outcome") for s in steps} == {"retrying"}
    ingest(db, workspace, [EventIn(name="bye", user_id="leave")])
    await aeventually(lambda: rows(db, "select status from journey_run where user_pk = %d" % pks[1]) == [("exited",)], 30,
                "the leaver's exit, seen at its next attempt")
    counter = MailCounter(port)
    counter.start()  # back
    try:
        await asyncio.wait_for(handle.result(), 60)
        await asyncio.sleep(0.5)
    finally:
        counter.stop()
    assert [rcpt for rcpt, _ in counter.mails] == ["stay@example.com"]
    runs = {r.user_id: r for r in store.list_runs(db, workspace, "nudge")}
    assert runs["stay"].status == "completed" and runs["leave"].status == "exited"
    statuses = dict(rows(db, "select address, status from message"))
    assert statuses == {"stay@example.com": "sent", "leave@example.com": "failed"}
    [(why,)] = rows(db, "select error from message where status = 'failed'")
    assert "left the journey" in why


CAPPED = """apiVersion: tidings/v1
kind: Journey
id: capped
entry: {event: go}
settings:
  frequency_cap: {messages: 1, per: 1d}
steps:
  - {id: hello, send: {channel: EMAIL, template: t}}
"""


def _smtp_down(monkeypatch) -> int:
    port = free_port()  # nobody listens on it
    for k, v in {"TIDINGS_SMTP_HOST": "127.0.0.1", "TIDINGS_SMTP_PORT": str(port), "TIDINGS_SMTP_SECURITY": "none",
                 "TIDINGS_SMTP_FROM": "Acme <news@acme.example>", "TIDINGS_DELIVERY_RETRY_MIN_SECONDS": "1",
                 "TIDINGS_DELIVERY_RETRY_MAX_SECONDS": "2"}.items():
        monkeypatch.setenv(k, v)
    return port


async def test_a_parked_member_skipped_by_the_frequency_cap_has_its_message_failed(temporal_dev, runtime_db,
                                                                                  dev_worker, monkeypatch):
    """Parked at the send step (mail server down), the customer gets a mail from elsewhere meanwhile: when
    due again the cap skips it, the run moves on, and its message is failed rather than `retrying` forever."""
    from tidings.engine.platform.clock import now_ms
    from tidings.engine.messaging.dispatch import store_events

    db, client = runtime_db, temporal_dev.client
    _smtp_down(monkeypatch)
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    store.put_journey(db, workspace, CAPPED)
    [pk] = add_customers(db, workspace, ["ana"])
    handle = await store.enter(client, db, workspace, "capped", [pk], task_queue=dev_worker)
    await aeventually(lambda: rows(db, "select status from message") == [("retrying",)], 30, "the message retrying")
    with db.begin() as conn:  # another journey's mail reached her meanwhile
        now = now_ms()
        store_events(conn, workspace.id, [{"workspace_id": workspace.id, "event_id": "elsewhere", "user_pk": pk,
                                    "endpoint_pk": None, "name": "_email.send", "ts": now, "attributes": {},
                                    "metrics": {}, "received_at": now}])
    await asyncio.wait_for(handle.result(), 60)
    [run] = store.list_runs(db, workspace, "capped")
    assert run.status == "completed"
    assert [s.get("outcome") for s in run.steps if s["step"] == "hello"][-1] == "frequency_cap"
    [(status, why, next_at)] = rows(db, "select status, error, next_attempt_at from message")
    assert (status, next_at) == ("failed", None) and "frequency cap" in why


async def test_stopping_a_journey_fails_its_messages_being_retried(temporal_dev, runtime_db, dev_worker,
                                                                  monkeypatch):
    db, client = runtime_db, temporal_dev.client
    _smtp_down(monkeypatch)
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    store.put_journey(db, workspace, JOURNEY)
    pks = add_customers(db, workspace, ["ana", "bob"])
    await store.activate(client, db, workspace, "nudge", task_queue=dev_worker)
    handle = await store.enter(client, db, workspace, "nudge", pks, task_queue=dev_worker)
    await aeventually(lambda: rows(db, "select status, count(*) from message group by status") == [("retrying", 2)], 30,
                "both messages retrying")
    await store.stop(client, db, workspace, "nudge")
    try:
        await asyncio.wait_for(handle.result(), 30)
    except Exception:
        pass  # cancelled while it slept on the next attempt
    await asyncio.sleep(2.5)  # past a retry round: nothing brings them back
    assert rows(db, "select status, error, next_attempt_at from message") == [
        ("failed", "not delivered: journey stopped", None)] * 2
    # no run left active (one whose send activity was under way when the journey stopped can end `completed`)
    assert rows(db, "select count(*) from journey_run where status = 'active'") == [(0,)]
