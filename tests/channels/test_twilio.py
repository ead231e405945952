"""Twilio SMS and voice against a local Twilio-shaped HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlencode

import pytest

from tidings.engine.channels.contract import ChannelType, FeedbackSignatureError, OutgoingMessage
from tidings.plugins.twilio import TwilioSmsChannel, TwilioVoiceChannel

SID, TOKEN = "AC0123456789", "tw-auth-token"


def twilio_api(req):
    """Checks the documented request format, answers like Twilio."""
    expected_auth = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    if req.headers.get("authorization") != expected_auth:
        return 401, {"code": 20003, "message": "Authenticate", "status": 401}
    if req.headers.get("content-type") != "application/x-www-form-urlencoded":
        return 415, {"message": "form expected"}
    form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
    if req.path == f"/2010-04-01/Accounts/{SID}/Messages.json":
        kind = "SM"
        assert set(form) <= {"To", "From", "Body", "StatusCallback"}
        assert form["From"] == "+15550001111" and form["Body"]
    elif req.path == f"/2010-04-01/Accounts/{SID}/Calls.json":
        kind = "CA"
        ET.fromstring(form["Twiml"])  # must be well-formed XML
    else:
        return 404, {"code": 20404, "message": "not found"}
    to = form["To"]
    if to == "+15005550001":
        return 400, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}
    if to == "+15005550500":
        return 503, {"code": 20500, "message": "Service unavailable", "status": 503}
    if to == "+15005550429":
        return 429, {"code": 20429, "message": "Too Many Requests", "status": 429}
    return 201, {"sid": f"{kind}{len(to):04d}{to[-4:]}", "status": "queued"}


def sms(i, to):
    return OutgoingMessage(message_id=f"m{i}", to=to, channel_type=ChannelType.SMS, body=f"Code {i}")


def cfg(server, **kw):
    return {"base_url": server.url, "account_sid": SID, "auth_token": TOKEN,
            "from_number": "+15550001111", **kw}


async def test_sms_batch_classifies_results(http_server):
    server = http_server(twilio_api)
    results = await TwilioSmsChannel().send_batch(
        [sms(1, "+15551234567"), sms(2, "+15005550001"), sms(3, "+15005550500"), sms(4, "+15005550429")],
        cfg(server),
    )
    assert results[0].status == "sent" and results[0].provider_message_id.startswith("SM")
    assert results[1].status == "failed" and results[1].permanent and "21211" in results[1].error
    assert results[1].error_code == "21211" and results[0].error_code is None  # Twilio's own code, kept apart
    assert results[2].status == "failed" and not results[2].permanent
    assert results[3].status == "failed" and not results[3].permanent
    sent = [r for r in server.requests if parse_qs(r.body.decode())["To"] == ["+15551234567"]]
    assert parse_qs(sent[0].body.decode())["Body"] == ["Code 1"]


async def test_wrong_token_is_permanent_and_network_error_transient(http_server, closed_port):
    server = http_server(twilio_api)
    [r] = await TwilioSmsChannel().send_batch([sms(1, "+15551234567")], cfg(server, auth_token="nope"))
    assert r.status == "failed" and r.permanent and "401" in r.error
    [r] = await TwilioSmsChannel().send_batch(
        [sms(1, "+15551234567")], cfg(server, base_url=f"http://127.0.0.1:{closed_port}")
    )
    assert r.status == "failed" and not r.permanent


async def test_voice_call_says_escaped_text(http_server):
    server = http_server(twilio_api)
    m = OutgoingMessage(message_id="v1", to="+15551234567", channel_type=ChannelType.VOICE,
                        text="Your code is 1 < 2 & \"3\"")
    [r] = await TwilioVoiceChannel().send_batch([m], cfg(server))
    assert r.status == "sent" and r.provider_message_id.startswith("CA")
    twiml = parse_qs(server.requests[0].body.decode())["Twiml"][0]
    root = ET.fromstring(twiml)
    assert root.tag == "Response" and root.find("Say").text == 'Your code is 1 < 2 & "3"'


def signed(url: str, params: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    # Twilio's documented scheme, written independently of tidings.plugins.twilio.
    s = url + "".join(k + params[k] for k in sorted(params))
    sig = base64.b64encode(hmac.new(token.encode(), s.encode(), hashlib.sha1).digest()).decode()
    return {"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}


async def test_status_callback_round_trip(http_server):
    server = http_server(twilio_api)
    ch = TwilioSmsChannel()
    config = cfg(server, status_callback_url="https://hooks.acme.example/twilio/status")
    [r] = await ch.send_batch([sms(9, "+15551234567")], config)
    callback_url = parse_qs(server.requests[0].body.decode())["StatusCallback"][0]
    assert callback_url == "https://hooks.acme.example/twilio/status?tidings_message_id=m9"

    params = {"MessageSid": r.provider_message_id, "MessageStatus": "delivered",
              "To": "+15551234567", "AccountSid": SID}
    body = urlencode(params).encode()
    [ev] = ch.parse_feedback(signed(callback_url, params), body, config, url=callback_url)
    assert ev.event_type == "delivered"
    assert ev.message_id == "m9" and ev.provider_message_id == r.provider_message_id
    assert ev.timestamp.tzinfo is not None

    failed = {**params, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    [ev] = ch.parse_feedback(signed(callback_url, failed), urlencode(failed).encode(), config, url=callback_url)
    assert ev.event_type == "failed" and ev.permanent is True and ev.details["error_code"] == "30003"

    queued = {**params, "MessageStatus": "queued"}
    assert ch.parse_feedback(signed(callback_url, queued), urlencode(queued).encode(), config, url=callback_url) == []


async def test_status_callback_with_bad_signature_is_rejected():
    ch = TwilioSmsChannel()
    config = {"account_sid": SID, "auth_token": TOKEN, "from_number": "+1",
              "status_callback_url": "https://hooks.acme.example/twilio/status"}
    url = config["status_callback_url"]
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    tampered = urlencode({**params, "MessageStatus": "failed"}).encode()
    with pytest.raises(FeedbackSignatureError):
        ch.parse_feedback(signed(url, params), tampered, config)
    with pytest.raises(FeedbackSignatureError):
        ch.parse_feedback(signed(url, params, token="other"), urlencode(params).encode(), config)
    with pytest.raises(FeedbackSignatureError):
        ch.parse_feedback({}, urlencode(params).encode(), config)


async def test_call_status_callback():
    ch = TwilioVoiceChannel()
    url = "https://hooks.acme.example/twilio/status?tidings_message_id=v7"
    config = {"account_sid": SID, "auth_token": TOKEN, "from_number": "+1"}
    params = {"CallSid": "CA9", "CallStatus": "no-answer", "To": "+15551234567",
              "Timestamp": "Tue, 01 Oct 2024 10:00:00 +0000"}
    [ev] = ch.parse_feedback(signed(url, params), urlencode(params).encode(), config, url=url)
    assert (ev.event_type, ev.message_id, ev.provider_message_id) == ("failed", "v7", "CA9")
    assert ev.timestamp.isoformat() == "2024-10-01T10:00:00+00:00"
