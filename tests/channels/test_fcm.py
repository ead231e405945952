"""FCM HTTP v1 push against a local FCM-shaped server (and OAuth token server)."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tidings.engine.channels.contract import ChannelType, OutgoingMessage
from tidings.plugins.fcm import FcmChannel

ERRORS = {
    "unregistered": (404, "NOT_FOUND", "UNREGISTERED"),
    "invalid": (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    "busy": (503, "UNAVAILABLE", "UNAVAILABLE"),
    "internal": (500, "INTERNAL", "INTERNAL"),
    "quota": (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
}


def fcm_api(valid_tokens):
    def respond(req):
        if req.path == "/token":
            return token_endpoint(req)
        if req.path != "/v1/projects/acme-app/messages:send":
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no"}}
        if req.headers.get("authorization") not in {f"Bearer {t}" for t in valid_tokens}:
            return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "bad token"}}
        message = req.json()["message"]
        assert set(message) <= {"token", "notification", "data"}
        assert all(isinstance(v, str) for v in message.get("data", {}).values())
        if message["token"] in ERRORS:
            code, status, fcm_code = ERRORS[message["token"]]
            return code, {"error": {"code": code, "status": status, "message": fcm_code, "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}]}}
        return 200, {"name": f"projects/acme-app/messages/0:{message['token']}"}

    return respond


def push(i, token, **kw):
    return OutgoingMessage(message_id=f"p{i}", to=token, channel_type=ChannelType.PUSH,
                           title="Sale", body="50% off", data={"deep_link": "acme://sale", "n": "1"}, **kw)


async def test_push_with_access_token_and_error_mapping(http_server):
    server = http_server(fcm_api({"static-token"}))
    ch = FcmChannel()
    cfg = {"base_url": server.url, "project_id": "acme-app", "access_token": "static-token"}
    results = await ch.send_batch(
        [push(0, "device-1")] + [push(i + 1, t) for i, t in enumerate(ERRORS)], cfg
    )
    assert results[0].status == "sent"
    assert results[0].provider_message_id == "projects/acme-app/messages/0:device-1"
    by_token = {t: r for t, r in zip(ERRORS, results[1:])}
    assert by_token["unregistered"].permanent and "UNREGISTERED" in by_token["unregistered"].error
    assert by_token["invalid"].permanent
    assert not by_token["busy"].permanent and not by_token["internal"].permanent
    assert not by_token["quota"].permanent
    sent = [r.json()["message"] for r in server.requests if r.json()["message"]["token"] == "device-1"][0]
    assert sent == {"token": "device-1", "notification": {"title": "Sale", "body": "50% off"},
                    "data": {"deep_link": "acme://sale", "n": "1"}}


async def test_expired_static_token_is_permanent(http_server):
    server = http_server(fcm_api({"good"}))
    [r] = await FcmChannel().send_batch(
        [push(1, "d")], {"base_url": server.url, "project_id": "acme-app", "access_token": "stale"}
    )
    assert r.status == "failed" and r.permanent and "401" in r.error


# ---- service account -------------------------------------------------------

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC = KEY.public_key()
ISSUED: list[str] = []


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def token_endpoint(req):
    form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    header_b64, claims_b64, sig_b64 = form["assertion"].split(".")
    try:
        PUBLIC.verify(_b64d(sig_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return 400, {"error": "invalid_grant", "error_description": "bad signature"}
    header, claims = json.loads(_b64d(header_b64)), json.loads(_b64d(claims_b64))
    assert header["alg"] == "RS256"
    assert claims["iss"] == "push@acme-app.iam.gserviceaccount.com"
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["aud"].endswith("/token") and claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60
    token = f"ya29.issued-{len(ISSUED)}"
    ISSUED.append(token)
    return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}


async def test_service_account_obtains_and_caches_token(http_server):
    server = http_server(fcm_api(ISSUED))
    sa = {
        "type": "service_account",
        "client_email": "push@acme-app.iam.gserviceaccount.com",
        "private_key_id": "k1",
        "private_key": KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    cfg = {"base_url": server.url, "project_id": "acme-app", "service_account_json": json.dumps(sa),
           "token_uri": f"{server.url}/token"}
    ch = FcmChannel()
    r1 = await ch.send_batch([push(1, "d1"), push(2, "d2")], cfg)
    r2 = await ch.send_batch([push(3, "d3")], cfg)
    assert [r.status for r in r1 + r2] == ["sent"] * 3
    token_calls = [r for r in server.requests if r.path == "/token"]
    assert len(token_calls) == 1, "token is cached between batches"


async def test_service_account_with_wrong_key_fails_transiently(http_server):
    server = http_server(fcm_api(ISSUED))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa = {"client_email": "push@acme-app.iam.gserviceaccount.com",
          "private_key": other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode()}
    cfg = {"base_url": server.url, "project_id": "acme-app", "service_account_json": sa,
           "token_uri": f"{server.url}/token"}
    [r] = await FcmChannel().send_batch([push(1, "d1")], cfg)
    assert r.status == "failed" and not r.permanent and "token" in r.error
    assert "PRIVATE KEY" not in r.error
