"""tidings.engine.messaging.dispatch.send_journey_step: the contract the journey runtime calls, with real channels."""
from __future__ import annotations

import pytest

from tidings.engine.platform.clock import now_ms
from tidings.engine.channels.config import load_plugins
from tidings.engine.messaging.dispatch import JourneySend, send_journey_step
from tidings.engine.messaging.template_store import TemplateBody, put_template
from tidings.engine.workspaces.service import ensure_workspace
from .conftest import seed, user_pk

PLUGINS = load_plugins()


def step(db, settings, workspace, sends, template="hello", **kw):
    return send_journey_step(db, PLUGINS, settings, workspace.id, channel_type=kw.pop("channel_type", "EMAIL"),
                             template_id=template, data=kw.pop("data", {"cta": "https://acme.example/go"}),
                             sends=sends, journey_id="welcome", journey_version=3, step_id="hello", **kw)


@pytest.fixture
def workspace(api, db):
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace, "hello", TemplateBody(
        channel="EMAIL", subject="Hi {{ user.attributes.first_name | default('there') }}",
        text="Go to {{ data.cta }} ({{ 100 // data.visits }} points)", html="<p>Hi {{ data.name }}</p>",
        defaults={"visits": 1}))
    return workspace


def events_named(api, name):
    return [e for e in api.get("/v1/events", params={"name": name, "limit": 1000}).json()["items"]]


async def test_sends_through_smtp_once_per_key_and_records_events(api, db, settings, workspace, smtp_sink):
    seed(api, "ana", attributes={"first_name": "Ana"}, endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    seed(api, "bob", endpoints=[("bob-mail", "EMAIL", "bob@example.com"), ("bob-old", "EMAIL", "old@example.com", True)])
    sends = [JourneySend(user_pk=user_pk(db, "ana"), idempotency_key="wf-1/hello/ana", variant="A"),
             JourneySend(user_pk=user_pk(db, "bob"), idempotency_key="wf-1/hello/bob", data={"visits": 4})]
    first = await step(db, settings, workspace, sends)
    assert [o.status for o in first] == ["sent", "sent"]
    assert first[1].endpoint_ids == ["bob-mail"], "the opted-out endpoint is skipped"
    assert len(smtp_sink.mails) == 2
    ana = smtp_sink.to("ana@example.com")[0]
    assert ana["Subject"] == "Hi Ana"
    assert "Go to https://acme.example/go (100 points)" in ana.get_body(("plain",)).get_content()
    assert ana["List-Unsubscribe"].strip().startswith("<https://tidings.acme.example/t/u/")
    assert "(25 points)" in smtp_sink.to("bob@example.com")[0].get_body(("plain",)).get_content()
    assert smtp_sink.to("bob@example.com")[0]["Subject"] == "Hi there"

    again = await step(db, settings, workspace, sends)  # a retried activity
    assert [o.status for o in again] == ["duplicate", "duplicate"]
    assert again[0].message_ids == first[0].message_ids
    assert len(smtp_sink.mails) == 2, "the same key never sends twice"

    [ev] = [e for e in events_named(api, "_email.send") if e["user_id"] == "ana"]
    assert ev["endpoint_id"] == "ana-mail"
    assert ev["attributes"] == {"message_id": first[0].message_ids[0], "endpoint_id": "ana-mail", "channel": "smtp",
                                "template_id": "hello", "journey_id": "welcome", "journey_version": 3,
                                "step_id": "hello", "variant": "A",
                                "provider_message_id": f"<{first[0].message_ids[0]}@acme.example>"}
    assert ev["id"] == f"{first[0].message_ids[0]}:send"


async def test_opted_out_no_endpoint_and_render_failure_do_not_stop_the_batch(api, db, settings, workspace):
    seed(api, "out", endpoints=[("out-mail", "EMAIL", "out@example.com", True)])
    seed(api, "sms-only", endpoints=[("s1", "SMS", "+14155550100")])
    seed(api, "zero", endpoints=[("zero-mail", "EMAIL", "zero@example.com")])
    seed(api, "fine", endpoints=[("fine-mail", "EMAIL", "fine@example.com")])
    sends = [JourneySend(user_pk=user_pk(db, u), idempotency_key=f"k/{u}", data=d)
             for u, d in (("out", {}), ("sms-only", {}), ("zero", {"visits": 0}), ("fine", {}))]
    out = await step(db, settings, workspace, sends)  # no channel configured: the outbox keeps the messages
    assert [o.status for o in out] == ["opted_out", "no_endpoint", "render_failed", "sent"]
    assert out[0].endpoint_ids == ["out-mail"]
    assert "division" in out[2].error
    [failure] = events_named(api, "_email.rendering_failure")
    assert failure["user_id"] == "zero" and failure["attributes"]["part"] == "text"
    assert failure["attributes"]["step_id"] == "hello"
    box = api.get("/v1/outbox").json()["items"]
    assert [m["address"] for m in box] == ["fine@example.com"], "nothing was sent for the failed render"
    assert box[0]["message_id"] == out[3].message_ids[0]


async def test_missing_template_is_a_render_failure(api, db, settings, workspace):
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    [o] = await step(db, settings, workspace, [JourneySend(user_pk=user_pk(db, "ana"), idempotency_key="k")], template="gone")
    assert o.status == "render_failed" and "gone" in o.error
    assert api.get("/v1/outbox").json()["items"] == []


async def test_transient_failures_stay_retrying_with_their_error_until_the_window_is_over(api, db, settings, workspace,
                                                                                         monkeypatch):
    from tests.messaging.conftest import free_port
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    monkeypatch.setenv("TIDINGS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TIDINGS_SMTP_PORT", str(free_port()))  # nobody listens: connection refused
    monkeypatch.setenv("TIDINGS_SMTP_SECURITY", "none")
    [o] = await step(db, settings, workspace, [JourneySend(user_pk=user_pk(db, "ana"), idempotency_key="k")])
    assert o.status == "retrying" and "connection" in o.error.lower() and o.retry_at > now_ms()
    assert events_named(api, "_email.failed") == []  # not failed: tried again later
    msg = api.get(f"/v1/messages/{o.message_ids[0]}").json()
    assert msg["status"] == "retrying" and msg["attempts"] == 3 and "connection" in msg["error"].lower()
    assert msg["next_attempt_at"] is not None
    # the same send again (the journey comes back at retry_at): resumed, same message id, still refused;
    # with the window over it fails now, with the last error
    monkeypatch.setenv("TIDINGS_DELIVERY_RETRY_HOURS", "0.000001")
    [again] = await step(db, settings, workspace, [JourneySend(user_pk=user_pk(db, "ana"), idempotency_key="k")])
    assert again.status == "failed" and again.message_ids == o.message_ids and "connection" in again.error.lower()
    [ev] = events_named(api, "_email.failed")
    assert ev["attributes"]["permanent"] is False and ev["attributes"]["message_id"] == o.message_ids[0]
    msg = api.get(f"/v1/messages/{o.message_ids[0]}").json()
    assert msg["status"] == "failed" and msg["attempts"] == 6 and msg["next_attempt_at"] is None


async def test_a_resumed_send_skips_rows_already_sent_and_resends_the_open_one(api, db, settings, workspace, smtp_sink,
                                                                               monkeypatch):
    """A customer with two endpoints whose send was interrupted after one row was handed over (that row
    `sent`, the other still `retrying` after its server refused it): sent again under the same key, only
    the open row goes, under its first message id."""
    from tests.messaging.conftest import free_port

    seed(api, "ana", endpoints=[("ana-home", "EMAIL", "home@example.com"), ("ana-work", "EMAIL", "work@example.com")])
    send = [JourneySend(user_pk=user_pk(db, "ana"), idempotency_key="wf-9/hello/ana")]
    real_port = smtp_sink.port
    monkeypatch.setenv("TIDINGS_SMTP_PORT", str(free_port()))  # down: both rows retrying
    [first] = await step(db, settings, workspace, send)
    assert first.status == "retrying" and len(first.message_ids) == 2
    home, work = first.message_ids
    # the home row was handed over by an attempt that recorded it (a chunk recorded as it completes)
    from sqlalchemy import update

    from tidings.engine.messaging.tables import messages
    with db.begin() as conn:
        conn.execute(update(messages).where(messages.c.message_id == home).values(status="sent"))
    monkeypatch.setenv("TIDINGS_SMTP_PORT", str(real_port))  # back
    [again] = await step(db, settings, workspace, send)
    assert again.status == "sent" and again.message_ids == [home, work]
    assert [m[1] for m in smtp_sink.mails] == [["work@example.com"]], "the sent row is not sent again"
    assert smtp_sink.parsed()["X-Tidings-Message-Id"] == work
    assert api.get(f"/v1/messages/{work}").json()["status"] == "sent"


async def test_an_endpoint_opted_out_while_its_send_was_open_is_closed_not_left_waiting(api, db, settings, workspace,
                                                                                        smtp_sink, monkeypatch):
    """A send left open (provider down: both rows `retrying`); before the journey comes back, one endpoint
    opts out, then the other customer's every endpoint does. The resumed send delivers only to endpoints
    still subscribed, and the opted-out endpoints' rows end `failed` (opted out), not `retrying` for ever
    (which the messages feed and the journey's pending count would show)."""
    from tests.messaging.conftest import free_port

    seed(api, "ana", endpoints=[("ana-home", "EMAIL", "home@example.com"), ("ana-work", "EMAIL", "work@example.com")])
    seed(api, "bob", endpoints=[("bob-home", "EMAIL", "bob@example.com")])
    sends = [JourneySend(user_pk=user_pk(db, "ana"), idempotency_key="wf-9/hello/ana"),
             JourneySend(user_pk=user_pk(db, "bob"), idempotency_key="wf-9/hello/bob")]
    real_port = smtp_sink.port
    monkeypatch.setenv("TIDINGS_SMTP_PORT", str(free_port()))  # down: every row retrying
    first = await step(db, settings, workspace, sends)
    assert [o.status for o in first] == ["retrying", "retrying"]
    (home, work), (bob,) = first[0].message_ids, first[1].message_ids
    for endpoint_id, address, user_id in (("ana-work", "work@example.com", "ana"), ("bob-home", "bob@example.com", "bob")):
        assert api.put(f"/v1/endpoints/{endpoint_id}", json={"channel": "EMAIL", "address": address, "user_id": user_id,
                                                             "opt_out": True}).status_code == 200
    monkeypatch.setenv("TIDINGS_SMTP_PORT", str(real_port))  # back
    again = await step(db, settings, workspace, sends)
    assert [o.status for o in again] == ["sent", "opted_out"]
    assert [m[1] for m in smtp_sink.mails] == [["home@example.com"]]
    for mid, status in ((home, "sent"), (work, "failed"), (bob, "failed")):
        msg = api.get(f"/v1/messages/{mid}").json()
        assert msg["status"] == status and msg["next_attempt_at"] is None, msg
        if status == "failed":
            assert msg["error"].startswith("opted_out"), msg
