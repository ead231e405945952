"""Provider feedback through the API: signatures, message lookup, identity copied, duplicates once."""
from __future__ import annotations

import json
from urllib.parse import urlencode

from tidings.plugins.twilio import twilio_signature
from tidings.plugins.webhook import sign

from .conftest import events_named, record_events, send_event, ws_of

TWILIO = {"account_sid": "AC1", "auth_token": "tok-secret", "from_number": "+15550000000"}
SMTP = {"host": "127.0.0.1", "from_address": "Acme <news@acme.example>"}
SECRET = "feedback-s3cret-0123456789"


def _setup_sms(api, db, message_id="m1", provider_id="SM123"):
    api.put("/v1/endpoints/ann-sms", json={"channel": "SMS", "address": "+15551230000", "user_id": "ann"})
    record_events(db, ws_of(db), [send_event(message_id, endpoint_id="ann-sms", channel="sms",
                                             provider_message_id=provider_id, journey=("welcome", 3, "text-1"),
                                             variant="B")])
    r = api.put("/v1/channels/twilio-sms", json={"config": TWILIO})  # the config it sends with verifies callbacks
    assert r.status_code == 200, r.text
    assert r.json()["config"]["auth_token"] == "***" and r.json()["feedback_url"].endswith("/feedback/acme/twilio-sms")


def _twilio_post(client, path, form, token="tok-secret", signature=None):
    url = str(client.base_url).rstrip("/") + path
    sig = signature if signature is not None else twilio_signature(token, url, form)
    return client.post(path, content=urlencode(form), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig})


def test_twilio_status_callback_end_to_end(client, api, db):
    _setup_sms(api, db)
    form = {"MessageSid": "SM123", "MessageStatus": "delivered", "To": "+15551230000", "AccountSid": "AC1"}
    r = _twilio_post(client, "/feedback/acme/twilio-sms?tidings_message_id=m1", form)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 1, "recorded": 1, "duplicates": 0, "unmatched": 0}
    [ev] = events_named(api, "_sms.delivered")
    assert ev["id"] == "m1:delivered" and ev["user_id"] == "ann" and ev["endpoint_id"] == "ann-sms"
    a = ev["attributes"]
    assert a["message_id"] == "m1" and a["journey_id"] == "welcome" and a["journey_version"] == 3
    assert a["step_id"] == "text-1" and a["variant"] == "B" and a["channel"] == "sms"
    assert a["provider_status"] == "delivered" and a["provider_message_id"] == "SM123"
    assert a["template_id"] == "welcome" and "goal" not in a

    # the same status again (Twilio retries callbacks): recorded once
    r = _twilio_post(client, "/feedback/acme/twilio-sms?tidings_message_id=m1", form)
    assert r.json()["recorded"] == 0 and r.json()["duplicates"] == 1
    assert len(events_named(api, "_sms.delivered")) == 1


def test_twilio_callback_found_by_provider_id_and_failure_kept_raw(client, api, db):
    _setup_sms(api, db)
    form = {"MessageSid": "SM123", "MessageStatus": "undelivered", "ErrorCode": "30005", "To": "+15551230000"}
    r = _twilio_post(client, "/feedback/acme/twilio-sms", form)
    assert r.json()["recorded"] == 1, r.text
    [ev] = events_named(api, "_sms.failed")
    assert ev["attributes"]["provider_status"] == "undelivered" and ev["attributes"]["error_code"] == "30005"
    assert ev["attributes"]["permanent"] is True and ev["attributes"]["message_id"] == "m1"


def test_bad_signature_is_refused_and_records_nothing(client, api, db):
    _setup_sms(api, db)
    form = {"MessageSid": "SM123", "MessageStatus": "delivered"}
    r = _twilio_post(client, "/feedback/acme/twilio-sms?tidings_message_id=m1", form, token="wrong")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    # a valid signature for other parameters does not cover these
    url = str(client.base_url).rstrip("/") + "/feedback/acme/twilio-sms?tidings_message_id=m1"
    sig = twilio_signature("tok-secret", url, {"MessageSid": "SM123", "MessageStatus": "failed"})
    r = _twilio_post(client, "/feedback/acme/twilio-sms?tidings_message_id=m1", form, signature=sig)
    assert r.status_code == 403
    assert events_named(api, "_sms.delivered") == []


def test_unknown_workspace_channel_or_unconfigured_is_404(client, api, db):
    _setup_sms(api, db)
    form = {"MessageSid": "SM123", "MessageStatus": "delivered"}
    assert _twilio_post(client, "/feedback/nobody/twilio-sms", form).status_code == 404
    assert _twilio_post(client, "/feedback/acme/no-such-channel", form).status_code == 404
    assert _twilio_post(client, "/feedback/acme/twilio-voice", form).status_code == 404  # not configured


def test_feedback_of_another_workspace_matches_nothing(client, api, other_api, db):
    _setup_sms(api, db)
    assert other_api.put("/v1/channels/twilio-sms", json={"config": TWILIO}).status_code == 200
    form = {"MessageSid": "SM123", "MessageStatus": "delivered"}
    r = _twilio_post(client, "/feedback/globex/twilio-sms?tidings_message_id=m1", form)
    assert r.status_code == 200 and r.json()["unmatched"] == 1 and r.json()["recorded"] == 0
    assert events_named(api, "_sms.delivered") == [] and events_named(other_api, "_sms.delivered") == []


def test_generic_feedback_with_channel_secret(client, api, db):
    api.put("/v1/endpoints/bo-mail", json={"channel": "EMAIL", "address": "bo@example.com", "user_id": "bo"})
    record_events(db, ws_of(db), [send_event("e1", endpoint_id="bo-mail", provider_message_id="<abc@mx>",
                                             transactional=True)])
    assert api.put("/v1/channels/smtp", json={"config": SMTP}).status_code == 200
    no_secret = json.dumps({"events": [{"event_type": "delivered", "message_id": "e1"}]}).encode()
    assert client.post("/feedback/acme/smtp", content=no_secret,
                       headers={"Authorization": "Bearer anything"}).status_code == 403  # no secret configured
    assert api.put("/v1/channels/smtp", json={"config": SMTP, "feedback_secret": SECRET}).status_code == 200
    body = json.dumps({"events": [
        {"event_type": "hard_bounce", "provider_message_id": "<abc@mx>", "timestamp": "2026-03-02T10:00:00Z",
         "details": {"smtp_code": "550", "diagnostic": "no such user"}},
        {"event_type": "complaint", "message_id": "e1"},
        {"event_type": "delivered", "message_id": "unknown"},
    ]}).encode()
    r = client.post("/feedback/acme/smtp", content=body, headers={"X-Tidings-Signature": sign(SECRET, body)})
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 3, "recorded": 2, "duplicates": 0, "unmatched": 1}
    [b] = events_named(api, "_email.hard_bounce")
    assert b["attributes"]["transactional"] is True and b["attributes"]["smtp_code"] == "550"
    assert b["timestamp"] == "2026-03-02T10:00:00Z"
    assert len(events_named(api, "_email.complaint")) == 1
    # bearer secret works too; a wrong one does not
    body2 = json.dumps({"events": [{"event_type": "soft_bounce", "message_id": "e1"}]}).encode()
    assert client.post("/feedback/acme/smtp", content=body2, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.post("/feedback/acme/smtp", content=body2, headers={"Authorization": f"Bearer {SECRET}"}).json()["recorded"] == 1
    bad = json.dumps({"events": [{"event_type": "exploded", "message_id": "e1"}]}).encode()
    r = client.post("/feedback/acme/smtp", content=bad, headers={"Authorization": f"Bearer {SECRET}"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "events[0].event_type"


def test_feedback_unsubscribe_opts_the_endpoint_out(client, api, db):
    api.put("/v1/endpoints/cy-mail", json={"channel": "EMAIL", "address": "cy@example.com", "user_id": "cy"})
    record_events(db, ws_of(db), [send_event("u1", endpoint_id="cy-mail")])
    api.put("/v1/channels/smtp", json={"config": SMTP, "feedback_secret": SECRET})
    body = json.dumps({"events": [{"event_type": "unsubscribed", "message_id": "u1"}]}).encode()
    assert client.post("/feedback/acme/smtp", content=body,
                       headers={"Authorization": f"Bearer {SECRET}"}).json()["recorded"] == 1
    assert api.get("/v1/endpoints/cy-mail").json()["opt_out"] is True


def test_hard_bounces_and_complaints_suppress_the_endpoint_and_soft_bounces_do_not(client, api, db):
    for name in ("hb", "cp", "sb"):
        api.put(f"/v1/endpoints/{name}-mail", json={"channel": "EMAIL", "address": f"{name}@example.com", "user_id": name})
    record_events(db, ws_of(db), [send_event(f"m-{name}", endpoint_id=f"{name}-mail") for name in ("hb", "cp", "sb")])
    api.put("/v1/channels/smtp", json={"config": SMTP, "feedback_secret": SECRET})
    body = json.dumps({"events": [{"event_type": "hard_bounce", "message_id": "m-hb", "permanent": True},
                                  {"event_type": "complaint", "message_id": "m-cp"},
                                  {"event_type": "soft_bounce", "message_id": "m-sb"}]}).encode()
    assert client.post("/feedback/acme/smtp", content=body,
                       headers={"Authorization": f"Bearer {SECRET}"}).json()["recorded"] == 3
    assert {name: api.get(f"/v1/endpoints/{name}-mail").json()["opt_out"] for name in ("hb", "cp", "sb")} == {
        "hb": True, "cp": True, "sb": False}


def test_feedback_secret_lives_in_the_channel_config(api):
    r = api.put("/v1/channels/smtp", json={"config": SMTP, "feedback_secret": "short"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "feedback_secret"
    r = api.put("/v1/channels/smtp", json={"config": SMTP, "feedback_secret": "***"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "feedback_secret"  # nothing stored to keep
    r = api.put("/v1/channels/smtp", json={"config": SMTP, "feedback_secret": SECRET})
    assert r.status_code == 200 and r.json()["feedback_secret"] == "***"
    assert r.json()["feedback_url"].endswith("/feedback/acme/smtp")
    assert api.put("/v1/channels/smtp", json={"config": SMTP, "feedback_secret": "***"}).json()["feedback_secret"] == "***"
    [item] = api.get("/v1/channels").json()["items"]
    assert item["feedback_secret"] == "***" and SECRET not in json.dumps(item)
    assert api.get("/v1/feedback-settings/smtp").status_code == 404  # folded into /v1/channels
