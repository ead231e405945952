"""APNs push against a real HTTP/2 server on loopback that checks what Apple checks: HTTP/2, the path, the
ES256 provider token (signature against the .p8 key's public half, kid, iss, age), the apns-* headers and
the JSON payload; and answers as Apple does (apns-id, reasons, 410 Unregistered with a timestamp)."""
from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from sqlalchemy import text

from tidings.engine.channels.contract import ChannelType, OutgoingMessage
from tidings.plugins.apns import ApnsChannel
from tests.http2_loopback import Http2Server

KEY = ec.generate_private_key(ec.SECP256R1())
P8 = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                       serialization.NoEncryption()).decode()
TEAM, KEY_ID, TOPIC = "TEAM123456", "KEY7654321", "com.acme.app"
GOOD = "a1" * 32  # device tokens are hex
UNREGISTERED, BAD, BUSY, THROTTLED = "b2" * 32, "c3" * 32, "d4" * 32, "e5" * 32


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_provider_token(authorization: str) -> str:
    """What APNs does with `authorization: bearer <jwt>`; returns the token, raises AssertionError otherwise."""
    scheme, _, token = authorization.partition(" ")
    assert scheme == "bearer", "authorization is `bearer <jwt>`"
    header_b64, claims_b64, sig_b64 = token.split(".")
    header, claims, sig = json.loads(_unb64(header_b64)), json.loads(_unb64(claims_b64)), _unb64(sig_b64)
    assert header == {"alg": "ES256", "kid": KEY_ID}, header
    assert claims["iss"] == TEAM and abs(time.time() - claims["iat"]) < 3600, claims
    assert len(sig) == 64, "JWS ES256 signatures are raw r||s"
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        KEY.public_key().verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AssertionError("bad JWT signature") from None
    return token


class FakeApns:
    """Apple's answers, per device token; counts tokens seen and can expire the current one."""

    def __init__(self):
        self.tokens_seen: list[str] = []
        self.expired: set[str] = set()

    def __call__(self, req):
        if req.method != "POST" or not req.path.startswith("/3/device/"):
            return 404, {}, {"reason": "BadPath"}
        try:
            token = verify_provider_token(req.headers.get("authorization", ""))
        except AssertionError as exc:
            return 403, {}, {"reason": f"InvalidProviderToken: {exc}"}
        if token not in self.tokens_seen:
            self.tokens_seen.append(token)
        if token in self.expired:
            return 403, {}, {"reason": "ExpiredProviderToken"}
        h = req.headers
        assert h["apns-topic"] == TOPIC and h["apns-push-type"] in ("alert", "background"), h
        assert h["apns-priority"] in ("10", "5") and int(h["apns-expiration"]) >= 0, h
        assert uuid.UUID(h["apns-id"])
        apns_id = {"apns-id": h["apns-id"]}
        device = req.path.removeprefix("/3/device/")
        if device == UNREGISTERED:
            return 410, apns_id, {"reason": "Unregistered", "timestamp": 1_700_000_000_000}
        if device == BAD:
            return 400, apns_id, {"reason": "BadDeviceToken"}
        if device == BUSY:
            return 503, apns_id, {"reason": "ServiceUnavailable"}
        if device == THROTTLED:
            return 429, apns_id, {"reason": "TooManyRequests"}
        return 200, apns_id, b""


@pytest.fixture
def apns():
    fake = FakeApns()
    server = Http2Server(fake).start()
    server.fake = fake
    yield server
    server.stop()


def config(server, **kw) -> dict:
    return {"base_url": server.url, "team_id": TEAM, "key_id": KEY_ID, "private_key": P8, "topic": TOPIC, **kw}


def push(token: str, **kw) -> OutgoingMessage:
    return OutgoingMessage(message_id=uuid.uuid4().hex, to=token, channel_type=ChannelType.PUSH, title="Sale",
                           body="50% off", data={"deep_link": "acme://sale"}, **kw)


async def test_alert_push_over_http2_with_a_verified_provider_token(apns):
    msg = push(GOOD, headers={"apns-collapse-id": "sale-42"})
    [r] = await ApnsChannel().send_batch([msg], config(apns, sound="default"))
    assert r.status == "sent", r.error
    assert r.provider_message_id == str(uuid.UUID(msg.message_id))  # Apple echoes our apns-id
    [req] = apns.requests
    assert req.http_version == "2" and req.path == f"/3/device/{GOOD}"
    assert req.headers["apns-push-type"] == "alert" and req.headers["apns-priority"] == "10"
    assert req.headers["apns-collapse-id"] == "sale-42"
    assert 86000 < int(req.headers["apns-expiration"]) - time.time() <= 86400
    assert req.json() == {"aps": {"alert": {"title": "Sale", "body": "50% off"}, "sound": "default"},
                          "deep_link": "acme://sale"}


async def test_reasons_map_to_permanent_and_transient_failures(apns):
    tokens = [GOOD, UNREGISTERED, BAD, BUSY, THROTTLED, "not-a-token"]
    results = await ApnsChannel().send_batch([push(t) for t in tokens], config(apns))
    by = dict(zip(tokens, results))
    assert by[GOOD].ok
    assert by[UNREGISTERED].permanent and "410 Unregistered" in by[UNREGISTERED].error
    assert by[BAD].permanent and "BadDeviceToken" in by[BAD].error
    assert not by[BUSY].permanent and "503" in by[BUSY].error
    assert not by[THROTTLED].permanent and "429" in by[THROTTLED].error
    assert by["not-a-token"].permanent and "BadDeviceToken" in by["not-a-token"].error
    assert len(apns.requests) == 5  # the malformed token never left
    assert len({r.client_port for r in apns.requests}) == 1, "one HTTP/2 connection carries the batch"


async def test_the_token_is_reused_across_batches_and_renewed_when_apple_says_it_expired(apns):
    channel = ApnsChannel()
    assert all(r.ok for r in await channel.send_batch([push(GOOD), push(GOOD)], config(apns)))
    assert all(r.ok for r in await channel.send_batch([push(GOOD)], config(apns)))
    assert len(apns.fake.tokens_seen) == 1, "one provider token, not one per batch or request"
    assert len({r.client_port for r in apns.requests}) == 1, "the connection is kept between batches"
    apns.fake.expired.add(apns.fake.tokens_seen[0])
    time.sleep(1.1)  # a renewed token differs only by its iat (seconds)
    results = await channel.send_batch([push(GOOD), push(GOOD)], config(apns))
    assert all(r.ok for r in results), [r.error for r in results]
    assert len(apns.fake.tokens_seen) == 2, "renewed once for the whole batch"


async def test_background_push_and_bad_settings(apns):
    [r] = await ApnsChannel().send_batch([push(GOOD)], config(apns, push_type="background"))
    assert r.ok
    req = apns.requests[-1]
    assert req.headers["apns-push-type"] == "background" and req.headers["apns-priority"] == "5"
    assert req.json() == {"aps": {"content-available": 1}, "deep_link": "acme://sale"}
    from tidings.engine.channels.contract import ChannelConfigError

    for bad, field in (({"private_key": "not a key"}, "private_key"), ({"priority": 7}, "priority"),
                       ({"push_type": "shout"}, "push_type")):
        with pytest.raises(ChannelConfigError, match=field):
            ApnsChannel().resolve_config(config(apns, **bad))


def test_push_through_the_api_with_the_key_sealed_at_rest(api, db, apns):
    r = api.put("/v1/channels/apns", json={"config": config(apns)})
    assert r.status_code == 200, r.text
    assert r.json()["config"]["private_key"] == "***"
    with db.connect() as conn:
        raw = str(conn.execute(text("SELECT config FROM channel_config WHERE name = 'apns'")).scalar_one())
    assert "PRIVATE KEY" not in raw and P8[40:80] not in raw and TEAM in raw
    bad = api.put("/v1/channels/apns", json={"config": {**config(apns), "private_key": "-----BEGIN nonsense"}})
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "config.private_key")
    for uid, token in (("ana", GOOD), ("bo", UNREGISTERED)):
        assert api.put(f"/v1/users/{uid}", json={}).status_code == 200
        assert api.put(f"/v1/endpoints/{uid}-iphone", json={"channel": "PUSH", "address": token,
                                                             "user_id": uid}).status_code == 200
    r = api.post("/v1/messages", json={"channel": "PUSH", "content": {
        "title": "Hi {{ user.user_id }}", "body": "Your order shipped", "data": {"order": "{{ data.order }}"}},
        "data": {"order": "A-17"}, "recipients": [{"user_id": "ana"}, {"user_id": "bo"}]})
    assert r.status_code == 200, r.text
    ana, bo = r.json()["results"]
    assert ana["status"] == "sent" and bo["status"] == "failed" and "Unregistered" in bo["error"]
    sent = next(q for q in apns.requests if q.path.endswith(GOOD))
    assert sent.json() == {"aps": {"alert": {"title": "Hi ana", "body": "Your order shipped"}}, "order": "A-17"}
    [failed] = api.get("/v1/events", params={"name": "_push.failed"}).json()["items"]
    assert failed["user_id"] == "bo" and failed["attributes"]["permanent"] is True
    assert "410 Unregistered" in failed["attributes"]["error"] and failed["attributes"]["channel"] == "apns"
    [ok] = api.get("/v1/events", params={"name": "_push.send"}).json()["items"]
    assert ok["attributes"]["provider_message_id"] == str(uuid.UUID(ana["message_ids"][0]))
