"""POST /v1/messages end to end: real SMTP (aiosmtpd) and a Twilio-shaped HTTP server on loopback."""
from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from .conftest import seed

WELCOME = {"channel": "EMAIL", "subject": "Welcome, {{ data.name | default(user.attributes.first_name) }}!",
           "text": "Your code is {{ data.code }}.", "html": "<p>Code <b>{{ data.code }}</b> for {{ data.name }}</p>"}


@pytest.fixture
def welcome(api):
    assert api.put("/v1/templates/welcome", json=WELCOME).status_code == 200


def send(api, body, key=None):
    return api.post("/v1/messages", json=body, headers={"Idempotency-Key": key} if key else {})


def test_email_to_an_address_and_a_user_through_smtp(api, smtp_sink, welcome):
    seed(api, "ana", attributes={"first_name": "Ana"}, endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    r = send(api, {"channel": "EMAIL", "template_id": "welcome", "data": {"code": "42"},
                   "recipients": [{"address": "zoe@example.org", "data": {"name": "Zoé"}}, {"user_id": "ana"}]})
    assert r.status_code == 200, r.text
    zoe, ana = r.json()["results"]
    assert zoe["status"] == "sent" and zoe["recipient"] == {"address": "zoe@example.org"}
    assert ana["status"] == "sent" and ana["endpoint_ids"] == ["ana-mail"]

    [mail] = smtp_sink.to("zoe@example.org")
    assert mail["Subject"] == "Welcome, Zoé!"
    assert mail.get_body(("plain",)).get_content().strip() == "Your code is 42."
    assert "Code <b>42</b> for Zoé" in mail.get_body(("html",)).get_content()
    assert mail["List-Unsubscribe"].strip().startswith("<https://tidings.acme.example/t/u/")
    assert mail["X-Tidings-Message-Id"] == zoe["message_id"]
    assert smtp_sink.to("ana@example.com")[0]["Subject"] == "Welcome, Ana!"

    got = api.get(f"/v1/messages/{ana['message_id']}").json()
    assert got["status"] == "sent" and got["user_id"] == "ana" and got["transactional"] is True
    assert [e["name"] for e in got["events"]] == ["_email.send"]
    assert got["events"][0]["attributes"] == {"message_id": ana["message_id"], "endpoint_id": "ana-mail",
                                              "channel": "smtp", "template_id": "welcome", "transactional": True,
                                              "provider_message_id": f"<{ana['message_id']}@acme.example>"}
    assert api.get(f"/v1/messages/{zoe['message_id']}").json()["status"] == "sent"


def test_idempotency_key_replays_the_answer_and_refuses_another_body(api, smtp_sink, welcome):
    body = {"channel": "EMAIL", "template_id": "welcome", "data": {"code": "1"},
            "recipients": [{"address": "once@example.org"}]}
    first = send(api, body, key="order-77")
    again = send(api, body, key="order-77")
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert len(smtp_sink.to("once@example.org")) == 1, "the same key and body never send twice"
    other = send(api, {**body, "data": {"code": "2"}}, key="order-77")
    assert other.status_code == 409 and other.json()["error"]["field"] == "Idempotency-Key"
    assert len(smtp_sink.mails) == 1
    assert send(api, body, key="order-78").json()["results"][0]["status"] == "sent"
    assert len(smtp_sink.mails) == 2


def test_opted_out_endpoints_are_skipped_and_reported(api, smtp_sink, welcome):
    seed(api, "bob", endpoints=[("bob-mail", "EMAIL", "bob@example.com", True)])
    r = send(api, {"channel": "EMAIL", "template_id": "welcome", "recipients": [
        {"endpoint_id": "bob-mail"}, {"user_id": "bob"}, {"address": "bob@example.com"}]})
    assert [x["status"] for x in r.json()["results"]] == ["opted_out"] * 3
    assert all(x["endpoint_ids"] == ["bob-mail"] for x in r.json()["results"])
    assert smtp_sink.mails == []


def test_bad_requests_name_the_field_and_write_nothing(api, welcome):
    seed(api, "sms", endpoints=[("phone", "SMS", "+14155550100")])
    cases = [
        ({"channel": "EMAIL", "template_id": "nope", "recipients": [{"address": "a@example.com"}]}, "template_id"),
        ({"channel": "SMS", "template_id": "welcome", "recipients": [{"address": "+14155550100"}]}, "template_id"),
        ({"channel": "EMAIL", "recipients": [{"address": "a@example.com"}]}, "template_id"),
        ({"channel": "EMAIL", "template_id": "welcome", "recipients": [{"address": "not-an-email"}]},
         "recipients[0].address"),
        ({"channel": "EMAIL", "template_id": "welcome", "recipients": [{"address": "a@example.com"},
                                                                      {"endpoint_id": "ghost"}]},
         "recipients[1].endpoint_id"),
        ({"channel": "EMAIL", "template_id": "welcome", "recipients": [{"endpoint_id": "phone"}]},
         "recipients[0].endpoint_id"),
        ({"channel": "EMAIL", "template_id": "welcome", "recipients": [{"user_id": "ghost"}]}, "recipients[0].user_id"),
        ({"channel": "EMAIL", "template_id": "welcome", "recipients": [{"address": "a@example.com", "user_id": "x"}]},
         "recipients[0]"),
        ({"channel": "EMAIL", "content": {"subject": "Hi", "text": "line one\n{{ data.x | nosuchfilter }}"},
          "recipients": [{"address": "a@example.com"}]}, "content.text"),
        ({"channel": "EMAIL", "template_id": "welcome", "recipients": []}, "recipients"),
        ({"channel": "FAX", "template_id": "welcome", "recipients": [{"address": "a@example.com"}]}, "channel"),
        # an address sent to directly must fit the message's 512-character key ("to:" + address)
        ({"channel": "WEBHOOK", "content": {"text": "hi"}, "recipients": [
            {"address": "https://hooks.example.com/" + "a" * 600}]}, "recipients[0].address"),
    ]
    for body, field in cases:
        r = send(api, body, key="k-bad")
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["field"] == field, (body, r.json())
    assert "line 2" in send(api, cases[8][0]).json()["error"]["message"]
    assert api.get("/v1/outbox").json()["items"] == []
    # a refused request does not burn its Idempotency-Key
    good = {"channel": "EMAIL", "template_id": "welcome", "recipients": [{"address": "a@example.com"}]}
    assert send(api, good, key="k-bad").json()["results"][0]["status"] == "sent"


def test_render_failure_is_an_event_and_sends_nothing(api, smtp_sink):
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    r = send(api, {"channel": "EMAIL", "content": {"subject": "Share", "text": "{{ 100 // data.n }}%"},
                   "data": {"n": 0}, "recipients": [{"user_id": "ana"}, {"address": "x@example.com", "data": {"n": 4}}]})
    failed, ok = r.json()["results"]
    assert failed["status"] == "render_failed" and "text" in failed["error"]
    assert ok["status"] == "sent"
    assert [m[1] for m in smtp_sink.mails] == [["x@example.com"]]
    [ev] = api.get("/v1/events", params={"name": "_email.rendering_failure"}).json()["items"]
    assert ev["user_id"] == "ana" and ev["attributes"]["transactional"] is True


def test_sms_through_a_twilio_shaped_server(api, http_server):
    server = http_server(lambda req: (201, {"sid": "SM" + "1" * 32, "status": "queued"}))
    r = api.put("/v1/channels/twilio-sms", json={"config": {
        "base_url": server.url, "account_sid": "AC123", "auth_token": "tw-secret", "from_number": "+15550001111"}})
    assert r.status_code == 200, r.text
    seed(api, "ana", attributes={"first_name": "Ana"}, endpoints=[("ana-phone", "SMS", "+14155550101")])
    r = send(api, {"channel": "SMS", "content": {"body": "Hi {{ user.attributes.first_name }}, code {{ data.code }}"},
                   "data": {"code": "9911"}, "recipients": [{"user_id": "ana"}]})
    assert r.json()["results"][0]["status"] == "sent", r.text
    [req] = server.requests
    form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
    assert form == {"To": "+14155550101", "From": "+15550001111", "Body": "Hi Ana, code 9911"}
    assert req.path == "/2010-04-01/Accounts/AC123/Messages.json"
    msg = api.get(f"/v1/messages/{r.json()['results'][0]['message_id']}").json()
    assert msg["provider_message_id"] == "SM" + "1" * 32 and msg["channel"] == "twilio-sms"


def test_batch_sends_many_personalized_messages(api, welcome):
    r = api.post("/v1/messages/batch", json={"messages": [
        {"channel": "EMAIL", "template_id": "welcome", "data": {"name": f"N{i}", "code": str(i)},
         "recipients": [{"address": f"p{i}@example.com"}]} for i in range(3)]})
    assert r.status_code == 200, r.text
    assert [m["results"][0]["status"] for m in r.json()["messages"]] == ["sent"] * 3
    box = api.get("/v1/outbox").json()["items"]
    assert sorted((m["address"], m["subject"], m["text"]) for m in box) == [
        (f"p{i}@example.com", f"Welcome, N{i}!", f"Your code is {i}.") for i in range(3)]
    bad = api.post("/v1/messages/batch", json={"messages": [
        {"channel": "EMAIL", "template_id": "welcome", "recipients": [{"address": "ok@example.com"}]},
        {"channel": "EMAIL", "template_id": "welcome", "recipients": [{"address": "nope"}]}]})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "messages[1].recipients[0].address"
    assert len(api.get("/v1/outbox").json()["items"]) == 3
