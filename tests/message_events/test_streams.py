"""Event streams: webhook sink (signature, order, retries, dead letters), NDJSON file sink, Pinpoint shape,
the delivery loop in the API, and workspace isolation."""
from __future__ import annotations

import asyncio
import json

from tidings.plugins.webhook import verify_signature

from tests.eventually import eventually

from .conftest import record_events, send_event, ws_of


def _events(api, items):
    r = api.post("/v1/events", json={"events": items})
    assert r.status_code == 202, r.text


def _hook(receiver_url, **extra):
    return {"kind": "webhook", "config": {"url": receiver_url, "secret": "whsec"},
            "start": "beginning", **extra}


async def _drain(runner, rounds=20):
    for _ in range(rounds):
        await runner.tick()
        await asyncio.sleep(0.01)


async def test_webhook_sink_signs_batches_and_keeps_order(manual, receiver):
    rcv = receiver()
    r = manual.api.put("/v1/event-streams/all", json=_hook(rcv.url, batch_size=3))
    assert r.status_code == 201, r.text
    assert r.json()["config"]["secret"] == "***" and r.json()["position"] == 0
    _events(manual.api, [{"user_id": f"u{i % 2}", "name": "view", "id": f"e{i}", "attributes": {"n": i}}
                         for i in range(7)])
    await _drain(manual.runner)
    assert len(rcv.requests) == 3
    got = []
    for req in rcv.requests:
        assert verify_signature("whsec", req.headers["x-tidings-signature"], req.body)
        body = req.json()
        assert body["stream"] == "all" and req.headers["idempotency-key"].startswith("all:")
        got += body["records"]
    assert [g["event_id"] for g in got] == [f"e{i}" for i in range(7)]
    for user in ("u0", "u1"):  # in order per customer
        ns = [g["attributes"]["n"] for g in got if g["user_id"] == user]
        assert ns == sorted(ns)
    assert {"id", "name", "timestamp", "workspace", "user_id", "attributes"} <= set(got[0])
    s = manual.api.get("/v1/event-streams/all").json()
    assert s["delivered"] == 7 and s["position"] == got[-1]["id"] and s["failures"] == 0


async def test_retries_after_500_then_delivers_once(manual, receiver):
    rcv = receiver([500, 503])
    manual.api.put("/v1/event-streams/r", json=_hook(rcv.url))
    _events(manual.api, [{"user_id": "a", "name": "x", "id": "e1"}, {"user_id": "a", "name": "y", "id": "e2"}])
    await manual.runner.tick()
    s = manual.api.get("/v1/event-streams/r").json()
    assert s["failures"] == 1 and "HTTP 500" in s["last_error"] and s["delivered"] == 0
    await _drain(manual.runner)
    assert len(rcv.requests) == 3
    assert rcv.requests[0].body == rcv.requests[2].body or \
        rcv.requests[0].json()["records"] == rcv.requests[2].json()["records"]
    assert len({r.headers["idempotency-key"] for r in rcv.requests}) == 1
    s = manual.api.get("/v1/event-streams/r").json()
    assert s["delivered"] == 2 and s["failures"] == 0 and s["last_error"] is None and s["dead_letters"] == 0


async def test_dead_letter_after_repeated_failures_then_moves_on(manual, receiver):
    rcv = receiver([500, 500, 500])
    manual.api.put("/v1/event-streams/d", json=_hook(rcv.url, max_attempts=3, batch_size=10))
    _events(manual.api, [{"user_id": "a", "name": "x", "id": "lost"}])
    await _drain(manual.runner)
    dl = manual.api.get("/v1/event-streams/d/dead-letters").json()["items"]
    assert len(dl) == 1 and dl[0]["attempts"] == 3 and "HTTP 500" in dl[0]["error"]
    assert [r["event_id"] for r in dl[0]["records"]] == ["lost"]
    _events(manual.api, [{"user_id": "a", "name": "x", "id": "next"}])
    await _drain(manual.runner)
    assert rcv.requests[-1].json()["records"][0]["event_id"] == "next"
    s = manual.api.get("/v1/event-streams/d").json()
    assert s["dead_letters"] == 1 and s["delivered"] == 1


async def test_ndjson_sink_in_pinpoint_shape_with_filter(manual, tmp_path, monkeypatch):
    monkeypatch.setenv("TIDINGS_STREAMS_DIR", str(tmp_path / "streams"))
    r = manual.api.put("/v1/event-streams/pp", json={
        "kind": "ndjson", "config": {"path": "pinpoint.ndjson"}, "format": "pinpoint", "start": "beginning",
        "filter": {"event_types": ["_email.*", "_sms.*"]}})
    assert r.status_code == 201, r.text
    manual.api.put("/v1/endpoints/em", json={"channel": "EMAIL", "address": "e@example.com", "user_id": "eve"})
    manual.api.put("/v1/endpoints/ph", json={"channel": "SMS", "address": "+15550001111", "user_id": "eve"})
    workspace = ws_of(manual.db)
    record_events(manual.db, workspace, [
        send_event("m1", endpoint_id="em", journey=("j1", 1, "s1"), provider_message_id="ses-1"),
        send_event("m2", endpoint_id="ph", channel="sms", transactional=True),
        send_event("m3", endpoint_id="ph", channel="sms", journey=("j1", 1, "s2")),
        send_event("m1", endpoint_id="em", journey=("j1", 1, "s1"), name_type="hard_bounce"),
        send_event("m2", endpoint_id="ph", channel="sms", transactional=True, name_type="delivered"),
    ])
    _events(manual.api, [{"user_id": "eve", "name": "purchase"}])  # filtered out
    await _drain(manual.runner)
    lines = [json.loads(x) for x in (tmp_path / "streams/acme/pinpoint.ndjson").read_text().splitlines()]
    assert [x["event_type"] for x in lines] == ["_email.send", "_SMS.BUFFERED", "_journey.send",
                                                "_email.hardbounce", "_SMS.SUCCESS"]
    send, sms, journey, bounce, delivered = lines
    assert send["application"]["app_id"] == "acme" and send["client"]["client_id"] == "em"
    assert send["attributes"]["journey_id"] == "j1" and send["attributes"]["journey_activity_id"] == "s1"
    assert send["attributes"]["feedback"] == "received"
    mail = send["facets"]["email_channel"]["mail_event"]["mail"]
    assert mail["message_id"] == "ses-1" and mail["destination"] == ["e@example.com"]
    assert sms["attributes"]["message_type"] == "Transactional" and sms["attributes"]["record_status"] == "SUCCESSFUL"
    assert sms["attributes"]["destination_phone_number"] == "+15550001111"
    assert journey["attributes"]["journey_send_status"] == "SUCCESS"
    assert journey["attributes"]["journey_activity_type"] == "SMS"
    assert json.loads(journey["client_context"]["custom"]["endpoint"])["Address"] == "+15550001111"
    assert bounce["facets"]["email_channel"]["mail_event"]["bounce"]["bounce_type"] == "Permanent"
    assert delivered["attributes"]["record_status"] == "DELIVERED"
    assert isinstance(send["event_timestamp"], int) and send["event_version"] == "3.1"


def test_stream_configuration_errors(manual):
    api = manual.api
    r = api.put("/v1/event-streams/x", json={"kind": "kafka"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "kind" and "webhook" in r.json()["error"]["message"]
    r = api.put("/v1/event-streams/x", json={"kind": "webhook", "config": {}})
    assert r.status_code == 400 and "url" in r.json()["error"]["message"]
    r = api.put("/v1/event-streams/x", json={"kind": "webhook", "config": {"url": "ftp://x"}})
    assert r.status_code == 400
    r = api.put("/v1/event-streams/x", json={"kind": "ndjson", "config": {"path": "../../etc/passwd"}})
    assert r.status_code == 400 and "streams folder" in r.json()["error"]["message"]
    r = api.put("/v1/event-streams/x", json={"kind": "webhook", "config": {"url": "http://h/"}, "format": "csv"})
    assert r.status_code == 400
    assert api.put("/v1/event-streams/bad%20id", json={"kind": "webhook", "config": {"url": "http://h/"}}).status_code == 400
    assert api.get("/v1/event-streams/none").status_code == 404


async def test_streams_are_per_workspace(manual, receiver):
    rcv = receiver()
    manual.api.put("/v1/event-streams/s", json=_hook(rcv.url))
    assert manual.other.get("/v1/event-streams/s").status_code == 404
    assert manual.other.get("/v1/event-streams").json()["items"] == []
    _events(manual.other, [{"user_id": "g", "name": "globex-only"}])
    _events(manual.api, [{"user_id": "a", "name": "acme-only"}])
    await _drain(manual.runner)
    names = [rec["name"] for req in rcv.requests for rec in req.json()["records"]]
    assert names == ["acme-only"]
    assert manual.api.delete("/v1/event-streams/s").status_code == 204
    assert manual.api.get("/v1/event-streams").json()["items"] == []


def test_new_stream_starts_now_by_default(manual):
    _events(manual.api, [{"user_id": "a", "name": "old"}])
    r = manual.api.put("/v1/event-streams/n", json={"kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}})
    assert r.json()["position"] > 0


def test_delivery_loop_runs_in_the_api(api, receiver):
    rcv = receiver()
    assert api.put("/v1/event-streams/live", json=_hook(rcv.url, filter={"channels": ["email"]})).status_code == 201
    api.put("/v1/endpoints/em", json={"channel": "EMAIL", "address": "e@example.com", "user_id": "eve"})
    _events(api, [{"user_id": "eve", "name": "ignored"}])
    from .conftest import ws_of as _ws

    db = api.client.app.state.db
    record_events(db, _ws(db), [send_event("m1", endpoint_id="em")])
    eventually(lambda: rcv.requests, 10, "the sink receiving a request")
    assert [r["name"] for r in rcv.requests[0].json()["records"]] == ["_email.send"]


async def test_a_sink_secret_is_sealed_at_rest_and_signs_deliveries(manual, receiver, monkeypatch, tmp_path):
    from sqlalchemy import text
    from cryptography.fernet import Fernet

    rcv = receiver()
    hook = _hook(rcv.url)
    hook["config"]["secret"] = "whsec-stream-7d1e"
    assert manual.api.put("/v1/event-streams/sealed", json=hook).status_code == 201
    with manual.db.connect() as conn:
        raw = str(conn.execute(text("SELECT config FROM event_stream WHERE stream_id = 'sealed'")).scalar_one())
    assert "whsec-stream-7d1e" not in raw and "fernet:" in raw and rcv.url in raw
    _events(manual.api, [{"user_id": "a", "name": "x", "id": "e1"}])
    await _drain(manual.runner)
    [req] = rcv.requests
    assert verify_signature("whsec-stream-7d1e", req.headers["x-tidings-signature"], req.body)
    # the key it was sealed with gone: the stream fails with the reason, naming it, and sends nothing
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    manual.runner._sinks.clear()  # as in a restarted process
    _events(manual.api, [{"user_id": "a", "name": "x", "id": "e2"}])
    await manual.runner.tick()
    s = manual.api.get("/v1/event-streams/sealed").json()
    assert "event stream 'sealed'" in s["last_error"] and "cannot be decrypted" in s["last_error"]
    assert len(rcv.requests) == 1
    # no key at all: the secret is refused, nothing is stored in plain text
    monkeypatch.delenv("TIDINGS_ENCRYPTION_KEYS")
    monkeypatch.setenv("TIDINGS_HOME", str(tmp_path / "no-keys"))
    r = manual.api.put("/v1/event-streams/plain", json=hook)
    assert (r.status_code, r.json()["error"]["field"]) == (409, "config.secret"), r.text
    assert "event stream 'plain'" in r.json()["error"]["message"]
    assert manual.api.get("/v1/event-streams/plain").status_code == 404


async def test_segment_events_of_a_batch_write_are_delivered_one_record_per_change(manual, receiver):
    """A customer entering several segments in one write is stored as one row (customers/history.py);
    the stream delivers one record per change, batches cut anywhere, and ends at the last position."""
    for sid, rule in (("pro", {"==": [{"var": "attributes.plan"}, "pro"]}), ("big", {">": [{"var": "attributes.n"}, 1]}),
                      ("huge", {">": [{"var": "attributes.n"}, 5]})):
        assert manual.api.post("/v1/segments", json={"id": sid, "name": sid, "rule": rule}).status_code == 201
    rcv = receiver()
    manual.api.put("/v1/event-streams/segs", json=_hook(rcv.url, batch_size=2, filter={"event_types": ["_segment.*"]}))
    r = manual.api.post("/v1/users/batch", json={"items": [{"user_id": "a", "attributes": {"plan": "pro", "n": 9}},
                                                           {"user_id": "b", "attributes": {"n": 3}}]})
    assert r.status_code < 300, r.text
    await _drain(manual.runner)
    got = [rec for req in rcv.requests for rec in req.json()["records"]]
    assert all(len(req.json()["records"]) <= 2 for req in rcv.requests)
    assert [(g["user_id"], g["name"], g["attributes"]["segment_id"]) for g in got] == [
        ("a", "_segment.enter", "big"), ("a", "_segment.enter", "huge"), ("a", "_segment.enter", "pro"),
        ("b", "_segment.enter", "big")]
    listed = manual.api.get("/v1/events", params={"name": "_segment.enter"}).json()["items"]
    assert [g["event_id"] for g in got] == [e["id"] for e in listed]
    ids = [g["id"] for g in got]
    assert ids == sorted(set(ids))
    s = manual.api.get("/v1/event-streams/segs").json()
    assert s["delivered"] == 4 and s["position"] == ids[-1]


async def test_ndjson_files_of_one_workspace_are_out_of_another_ones_reach(manual, tmp_path, monkeypatch):
    """globex names the very path acme's stream writes: each writes its own file, in its own folder."""
    streams = tmp_path / "streams"
    monkeypatch.setenv("TIDINGS_STREAMS_DIR", str(streams))
    for api in (manual.api, manual.other):
        r = api.put("/v1/event-streams/f", json={"kind": "ndjson", "config": {"path": "events.ndjson"},
                                                 "start": "beginning"})
        assert r.status_code == 201, r.text
    for path in ("../acme/events.ndjson", "../../tidings.db", str(streams / "acme" / "events.ndjson"),
                 "sub/../../acme/events.ndjson", "."):
        r = manual.other.put("/v1/event-streams/g", json={"kind": "ndjson", "config": {"path": path}})
        assert (r.status_code, r.json()["error"]["field"]) == (400, "config"), (path, r.text)
    _events(manual.api, [{"user_id": "a", "name": "acme-only"}])
    _events(manual.other, [{"user_id": "g", "name": "globex-only"}])
    await _drain(manual.runner)
    acme = [json.loads(x)["name"] for x in (streams / "acme/events.ndjson").read_text().splitlines()]
    globex = [json.loads(x)["name"] for x in (streams / "globex/events.ndjson").read_text().splitlines()]
    assert (acme, globex) == (["acme-only"], ["globex-only"])
    assert sorted(p.name for p in streams.iterdir()) == ["acme", "globex"]


async def test_a_webhook_sink_cannot_reach_loopback(manual, receiver, monkeypatch):
    """The operator allowed no private destination: the workspace's own allow_private_addresses is ignored,
    and neither an address nor a name (localhost) of loopback is called."""
    monkeypatch.delenv("TIDINGS_ALLOW_PRIVATE_DESTINATIONS")
    rcv = receiver()
    for stream_id, url in (("ip", rcv.url), ("name", rcv.url.replace("127.0.0.1", "localhost"))):
        hook = _hook(url, max_attempts=5)
        hook["config"]["allow_private_addresses"] = True
        assert manual.api.put(f"/v1/event-streams/{stream_id}", json=hook).status_code == 201
    _events(manual.api, [{"user_id": "a", "name": "x"}])
    await _drain(manual.runner, rounds=3)
    for stream_id in ("ip", "name"):
        s = manual.api.get(f"/v1/event-streams/{stream_id}").json()
        assert s["delivered"] == 0 and s["failures"] >= 1, s
        assert "DestinationRefused" in s["last_error"] and "TIDINGS_ALLOW_PRIVATE_DESTINATIONS" in s["last_error"]
    assert rcv.requests == []


async def test_last_error_shows_the_status_code_not_the_receivers_body(manual):
    from tests.loopback import HttpServer

    page = HttpServer(lambda _req: (502, "<h1>admin console</h1> token=s3cr3t")).start()
    try:
        assert manual.api.put("/v1/event-streams/e", json=_hook(page.url)).status_code == 201
        _events(manual.api, [{"user_id": "a", "name": "x"}])
        await manual.runner.tick()
        s = manual.api.get("/v1/event-streams/e").json()
        assert s["last_error"] == "RuntimeError: HTTP 502"
    finally:
        page.stop()


def test_a_workspace_name_that_is_no_plain_folder_name_gets_its_id(tmp_path, monkeypatch):
    from tidings.engine.workspaces.service import WorkspaceRef
    from tidings.plugins.event_sinks import NdjsonSink

    monkeypatch.setenv("TIDINGS_STREAMS_DIR", str(tmp_path))
    for name in ("../globex", "Acme", "a/b", ".hidden", "_ws9"):
        sink = NdjsonSink("s", {"path": "e.ndjson"}, workspace=WorkspaceRef(7, name))
        assert sink.path == (tmp_path / "_ws7" / "e.ndjson").resolve(), name
    assert NdjsonSink("s", {"path": "d/e.ndjson"}, workspace=WorkspaceRef(7, "acme-2")).path == \
        (tmp_path / "acme-2" / "d" / "e.ndjson").resolve()
