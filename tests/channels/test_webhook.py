"""Webhook channel against a local receiver; SSRF refusal; signature scheme."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from tidings.engine.channels.contract import ChannelType, OutgoingMessage
from tidings.plugins.webhook import WebhookChannel, verify_signature

SECRET = "whsec-test"


def hook(i, url, payload=None):
    return OutgoingMessage(message_id=f"w{i}", to=url, channel_type=ChannelType.WEBHOOK,
                           payload=payload if payload is not None else {"event": "welcome", "n": i},
                           idempotency_key=f"idem-{i}")


def receiver(req):
    header = req.headers.get("x-tidings-signature", "")
    parts = dict(p.split("=", 1) for p in header.split(","))
    # The documented scheme, computed independently:
    expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + req.body, hashlib.sha256).hexdigest()
    if parts.get("v1") != expected or abs(int(parts["t"]) - time.time()) > 300:
        return 401, "bad signature"
    if req.path == "/gone":
        return 410, "gone"
    if req.path == "/flaky":
        return 503, "try later"
    return 200, {"ok": True}


async def test_posts_signed_json(http_server):
    server = http_server(receiver)
    cfg = {"secret": SECRET}
    results = await WebhookChannel().send_batch(
        [hook(1, server.url + "/in"), hook(2, server.url + "/gone"), hook(3, server.url + "/flaky")], cfg
    )
    assert [r.status for r in results] == ["sent", "failed", "failed"]
    assert results[1].permanent and not results[2].permanent
    req = next(r for r in server.requests if r.path == "/in")
    assert req.json() == {"event": "welcome", "n": 1}
    assert req.headers["content-type"] == "application/json"
    assert req.headers["idempotency-key"] == "idem-1"
    assert req.headers["x-tidings-message-id"] == "w1"
    assert verify_signature(SECRET, req.headers["x-tidings-signature"], req.body)
    assert not verify_signature(SECRET, req.headers["x-tidings-signature"], req.body + b" ")
    assert not verify_signature("other", req.headers["x-tidings-signature"], req.body)
    assert not verify_signature(SECRET, req.headers["x-tidings-signature"], req.body, now=time.time() + 3600)


@pytest.fixture
def no_private_destinations(monkeypatch):
    """The default install: the operator allowed no private destination (the suite's conftest allows loopback)."""
    monkeypatch.delenv("TIDINGS_ALLOW_PRIVATE_DESTINATIONS", raising=False)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/x",
    "http://localhost:9/x",
    "http://10.1.2.3/x",
    "http://192.168.0.10/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:9/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://0.0.0.0/x",
    "http://[2002:a9fe:a9fe::]/x",  # 6to4 of 169.254.169.254
    "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
    "http://[::127.0.0.1]:9/x",  # IPv4-compatible
    "http://[::ffff:0:7f00:1]:9/x",  # SIIT
    "http://[64:ff9b:1::1]/x",  # local-use NAT64
])
async def test_refuses_private_destinations(url, no_private_destinations):
    [r] = await WebhookChannel().send_batch([hook(1, url)], {"secret": SECRET})
    assert r.status == "failed" and r.permanent
    assert "TIDINGS_ALLOW_PRIVATE_DESTINATIONS" in r.error


async def test_refusal_sends_nothing_to_a_local_receiver(http_server, no_private_destinations):
    server = http_server(receiver)
    for url in (server.url + "/in", server.url.replace("127.0.0.1", "localhost") + "/in"):
        # the workspace's own setting counts for nothing: only the operator's does
        [r] = await WebhookChannel().send_batch([hook(1, url)], {"secret": SECRET, "allow_private_addresses": True})
        assert r.status == "failed" and r.permanent and "TIDINGS_ALLOW_PRIVATE_DESTINATIONS" in r.error
    assert server.requests == []


async def test_error_answers_show_the_status_not_the_body(http_server):
    server = http_server(lambda req: (500, "internal page: db password hunter2"))
    [r] = await WebhookChannel().send_batch([hook(1, server.url)], {"secret": SECRET})
    assert r.status == "failed" and not r.permanent
    assert r.error == "HTTP 500"


async def test_non_http_scheme_is_refused():
    [r] = await WebhookChannel().send_batch([hook(1, "file:///etc/passwd")], {})
    assert r.status == "failed" and r.permanent


async def test_timeout_is_transient(http_server):
    def slow(req):
        time.sleep(1.0)
        return 200, "late"

    server = http_server(slow)
    [r] = await WebhookChannel().send_batch(
        [hook(1, server.url)], {"timeout": 0.2}
    )
    assert r.status == "failed" and not r.permanent and "Timeout" in r.error


# ---- Pinpoint's custom-channel mode (tidings.engine.channels.custom_payload) ---------------------------------

def custom(i, url, header, endpoint_id=None):
    from tidings.engine.channels import custom_payload
    endpoint_id = endpoint_id or f"ep-{i}"
    return OutgoingMessage(message_id=f"c{i}", to=url, channel_type=ChannelType.WEBHOOK,
                           payload=custom_payload.envelope(header, endpoint_id, {"ChannelType": "EMAIL",
                                                                                 "Address": f"u{i}@example.com"}),
                           metadata={"webhook_format": "pinpoint-custom-channel"}, idempotency_key=f"c{i}")


HEADER = {"ApplicationId": "acme", "JourneyId": "j1", "TreatmentId": "0", "ActivityId": "notify",
          "ScheduledTime": "2026-12-04T19:00:00.000Z", "Data": "hello"}


async def test_custom_channel_messages_go_out_in_signed_batches_of_fifty(http_server):
    server = http_server(receiver)
    other = {**HEADER, "Data": "another"}
    messages = [custom(i, server.url + "/pp", HEADER) for i in range(120)] + [
        custom(200, server.url + "/pp", other), custom(201, server.url + "/gone", HEADER),
        custom(202, server.url + "/pp", HEADER, endpoint_id="ep-7"),  # the same endpoint again: never twice in one request
        hook(300, server.url + "/in")]
    results = await WebhookChannel().send_batch(messages, {"secret": SECRET})
    assert [r.message_id for r in results] == [m.message_id for m in messages]
    assert [r.status for r in results] == ["sent"] * 121 + ["failed", "sent", "sent"]
    assert results[121].permanent and results[121].error == "HTTP 410"
    batches = [r.json() for r in server.requests if r.path == "/pp"]
    assert sorted(len(b["Endpoints"]) for b in batches) == [1, 21, 50, 50]  # Pinpoint's batches of at most 50
    main = [b for b in batches if b["Data"] == "hello"]
    sent = [eid for b in main for eid in b["Endpoints"]]
    assert sorted(sent) == sorted([f"ep-{i}" for i in range(120)] + ["ep-7"])
    for b in batches:
        assert {k: v for k, v in b.items() if k not in ("Endpoints", "Message", "Data")} == \
            {k: v for k, v in HEADER.items() if k != "Data"}
        assert b["Message"] == {}
    assert [b["Endpoints"] for b in batches if b["Data"] == "another"] == [
        {"ep-200": {"ChannelType": "EMAIL", "Address": "u200@example.com"}}]
    for req in server.requests:  # every request signed as a plain webhook is (the receiver answered 401 else)
        assert verify_signature(SECRET, req.headers["x-tidings-signature"], req.body)
    first = next(r for r in server.requests if r.path == "/pp" and len(r.json()["Endpoints"]) == 50)
    assert first.headers["idempotency-key"].startswith("batch-")
    assert len(first.headers["x-tidings-message-id"].split(",")) == 50
    assert next(r for r in server.requests if r.path == "/in").json() == {"event": "welcome", "n": 300}


async def test_a_custom_channel_batch_to_a_private_address_is_refused(http_server, no_private_destinations):
    server = http_server(receiver)
    results = await WebhookChannel().send_batch([custom(i, server.url + "/pp", HEADER) for i in range(3)],
                                                {"secret": SECRET})
    assert all(r.status == "failed" and r.permanent for r in results)
    assert "TIDINGS_ALLOW_PRIVATE_DESTINATIONS" in (results[0].error or "") and server.requests == []
