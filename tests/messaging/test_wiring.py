"""Messaging wired to message events: real sends (aiosmtpd, a Twilio-shaped server) whose tracking links,
provider callbacks and goals come back as events of the message's customer."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlsplit

from tidings.plugins.twilio import twilio_signature
from .conftest import seed

PUBLIC = "https://tidings.acme.example"
PAGE = {"channel": "EMAIL", "subject": "Your order, {{ data.name }}",
        "text": "See https://shop.example.com/orders/{{ data.order }}",
        "html": "<html><body><p>Hi {{ data.name }}</p><a href=\"https://shop.example.com/orders/{{ data.order }}\">"
                "your order</a> <a href=\"mailto:help@shop.example.com\">help</a></body></html>"}


def events_named(api, name):
    return api.get("/v1/events", params={"name": name, "limit": 1000}).json()["items"]


def _path(url: str) -> str:
    assert url.startswith(PUBLIC), url
    return url[len(PUBLIC):]


def test_email_links_pixel_and_one_click_unsubscribe(api, client, smtp_sink):
    assert api.put("/v1/templates/order", json=PAGE).status_code == 200
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    body = {"channel": "EMAIL", "template_id": "order", "data": {"name": "Ana", "order": "77"},
            "recipients": [{"user_id": "ana"}]}
    [res] = api.post("/v1/messages", json=body).json()["results"]
    assert res["status"] == "sent", res
    mid = res["message_id"]

    [mail] = smtp_sink.to("ana@example.com")
    html = mail.get_body(("html",)).get_content()
    assert "https://shop.example.com/orders/77" not in html, "the link goes through the click redirect"
    [click] = re.findall(r'href="(' + re.escape(PUBLIC) + r'/t/c/[^"]+)"', html)
    assert 'href="mailto:help@shop.example.com"' in html
    [pixel] = re.findall(r'<img src="(' + re.escape(PUBLIC) + r'/t/o/[^"]+\.gif)"', html)
    assert html.index(pixel) < html.index("</body>")
    assert "https://shop.example.com/orders/77" in mail.get_body(("plain",)).get_content()
    unsubscribe = mail["List-Unsubscribe"].strip()[1:-1]
    assert unsubscribe.startswith(f"{PUBLIC}/t/u/") and mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    r = client.get(_path(pixel))
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    r = client.get(_path(click), follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example.com/orders/77"
    for name in ("_email.open", "_email.click"):
        [ev] = events_named(api, name)
        assert ev["user_id"] == "ana" and ev["endpoint_id"] == "ana-mail", name
        a = ev["attributes"]
        assert a["message_id"] == mid and a["transactional"] is True and a["template_id"] == "order", name
        assert a["channel"] == "smtp", name
    assert events_named(api, "_email.click")[0]["attributes"]["link"] == "https://shop.example.com/orders/77"

    # RFC 8058: the mailbox provider POSTs "List-Unsubscribe=One-Click" to the header's URL
    r = client.post(_path(unsubscribe), content="List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert api.get("/v1/endpoints/ana-mail").json()["opt_out"] is True
    [u] = events_named(api, "_email.unsubscribe")
    assert u["id"] == f"{mid}:unsubscribe" and u["attributes"]["method"] == "one_click"
    assert u["user_id"] == "ana" and u["endpoint_id"] == "ana-mail"
    again = api.post("/v1/messages", json=body).json()["results"][0]
    assert again["status"] == "opted_out"
    assert client.post("/unsubscribe/" + mid).status_code == 404, "the unsigned route is gone"

    m = api.get("/v1/metrics/messages").json()["totals"]["metrics"]
    assert (m["sent"]["messages"], m["opened"]["messages"], m["clicked"]["messages"],
            m["unsubscribed"]["messages"]) == (1, 1, 1, 1)


def test_sms_twilio_status_callback_finds_the_message(api, client, http_server, monkeypatch):
    # The public URL is the test client's: the callback Twilio is told to call is one the client can post to.
    public = str(client.base_url).rstrip("/")
    monkeypatch.setenv("TIDINGS_PUBLIC_URL", public)
    server = http_server(lambda req: (201, {"sid": "SM" + "7" * 32, "status": "queued"}))
    token = "tw-auth-token"
    r = api.put("/v1/channels/twilio-sms", json={"config": {
        "base_url": server.url, "account_sid": "AC123", "auth_token": token, "from_number": "+15550001111"}})
    assert r.status_code == 200 and r.json()["feedback_url"] == f"{public}/feedback/acme/twilio-sms"
    seed(api, "ana", endpoints=[("ana-phone", "SMS", "+14155550101")])
    [res] = api.post("/v1/messages", json={"channel": "SMS", "content": {"body": "Code 1234"},
                                           "recipients": [{"user_id": "ana"}]}).json()["results"]
    assert res["status"] == "sent", res
    mid = res["message_id"]
    [send] = events_named(api, "_sms.send")
    assert send["id"] == f"{mid}:send" and send["attributes"]["provider_message_id"] == "SM" + "7" * 32

    # we told Twilio to call our feedback endpoint (no status_callback_url configured: the public URL's)
    [req] = server.requests
    callback = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}["StatusCallback"]
    assert callback == f"{public}/feedback/acme/twilio-sms?tidings_message_id={mid}"

    form = {"MessageSid": "SM" + "7" * 32, "MessageStatus": "delivered", "To": "+14155550101", "AccountSid": "AC123"}
    path = urlsplit(callback).path + "?" + urlsplit(callback).query
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(token, callback, form)}
    r = client.post(path, content=urlencode(form), headers=headers)
    assert r.status_code == 200 and r.json()["recorded"] == 1, r.text
    [ev] = events_named(api, "_sms.delivered")
    assert ev["id"] == f"{mid}:delivered" and ev["user_id"] == "ana" and ev["endpoint_id"] == "ana-phone"
    assert ev["attributes"]["message_id"] == mid and ev["attributes"]["transactional"] is True
    assert ev["attributes"]["channel"] == "twilio-sms"
    got = api.get(f"/v1/messages/{mid}").json()
    assert [e["name"] for e in got["events"]] == ["_sms.send", "_sms.delivered"]

    # found by Twilio's id alone too (a callback URL without our id); a bad signature records nothing
    form["MessageStatus"] = "undelivered"
    form["ErrorCode"] = "30005"
    bare = f"{public}/feedback/acme/twilio-sms"
    bad = client.post("/feedback/acme/twilio-sms", content=urlencode(form), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": twilio_signature("nope", bare, form)})
    assert bad.status_code == 403
    r = client.post("/feedback/acme/twilio-sms", content=urlencode(form), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": twilio_signature(token, bare, form)})
    assert r.json()["recorded"] == 1
    [failed] = events_named(api, "_sms.failed")
    assert failed["id"] == f"{mid}:failed" and failed["attributes"]["permanent"] is True


def test_a_failed_send_and_a_provider_failure_count_once(api, client, http_server):
    server = http_server(lambda req: (400, {"code": 21211, "message": "invalid To"}))
    api.put("/v1/channels/twilio-sms", json={"config": {
        "base_url": server.url, "account_sid": "AC1", "auth_token": "t", "from_number": "+15550001111"}})
    seed(api, "bo", endpoints=[("bo-phone", "SMS", "+14155550102")])
    [res] = api.post("/v1/messages", json={"channel": "SMS", "content": {"body": "x"},
                                           "recipients": [{"user_id": "bo"}]}).json()["results"]
    assert res["status"] == "failed"
    [ev] = events_named(api, "_sms.failed")
    assert ev["id"] == f"{res['message_id']}:failed", "the id provider feedback would give the same failure"
    assert ev["attributes"]["permanent"] is True


def test_transactional_goal_is_attributed(api, smtp_sink):
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    seed(api, "bob", endpoints=[("bob-mail", "EMAIL", "bob@example.com")])
    r = api.post("/v1/messages", json={"channel": "EMAIL", "content": {"subject": "Finish signing up", "text": "..."},
                                       "goal": {"event": "signup", "within": "2h"},
                                       "recipients": [{"user_id": "ana"}, {"user_id": "bob"}]})
    assert [x["status"] for x in r.json()["results"]] == ["sent", "sent"], r.text
    [send, _] = sorted(events_named(api, "_email.send"), key=lambda e: e["user_id"])
    assert send["attributes"]["goal"] == {"event": "signup", "within_seconds": 7200}
    assert api.post("/v1/events", json={"events": [{"user_id": "ana", "name": "signup"}]}).status_code in (200, 202)

    m = api.get("/v1/metrics/messages").json()
    assert m["transactional"]["metrics"]["converted"]["customers"] == 1
    assert m["transactional"]["rates"]["conversion"] == 0.5

    for within, ok in ((3600, True), ("90m", True), ("soon", False), (0, False)):
        r = api.post("/v1/messages", json={"channel": "EMAIL", "content": {"subject": "s", "text": "t"},
                                           "goal": {"event": "signup", "within": within},
                                           "recipients": [{"address": "x@example.com"}]})
        assert (r.status_code == 200) is ok, (within, r.text)
        if not ok:
            assert r.json()["error"]["field"] == "goal.within"


def test_tracking_needs_no_setup(api, smtp_sink):
    """A workspace's first email makes its tracking key; inline content is tracked like templates."""
    r = api.post("/v1/messages", json={"channel": "EMAIL", "content": {
        "subject": "s", "html": "<p><a href='https://a.example/x?y=1&amp;z=2'>x</a></p>"},
        "recipients": [{"address": "z@example.com"}]})
    assert r.json()["results"][0]["status"] == "sent", r.text
    html = smtp_sink.parsed().get_body(("html",)).get_content()
    assert "/t/c/" in html and "/t/o/" in html and "a.example" not in html
