"""Open pixel, click redirects and one-click unsubscribe through signed URLs; tampering is refused."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tidings.engine.messaging import tracking

from .conftest import events_named, record_events, send_event, ws_of

BASE = "https://news.example.com"
HTML = """<html><body><p>Hi</p>
<a href="https://shop.example.com/sale?a=1&amp;b=2">Sale</a>
<a class="x" href='https://shop.example.com/b'>B</a>
<a href="mailto:help@example.com">mail</a> <a href="#top">top</a>
<a data-tidings-notrack href="https://keep.example.com/">keep</a>
</body></html>"""


@pytest.fixture
def sent(api, db):
    api.put("/v1/endpoints/dee-mail", json={"channel": "EMAIL", "address": "dee@example.com", "user_id": "dee"})
    workspace = ws_of(db)
    record_events(db, workspace, [send_event("m7", endpoint_id="dee-mail", journey=("spring", 2, "mail-1"))])
    return workspace


def _path(url: str) -> str:
    return urlsplit(url).path


def test_rewrite_html_routes_links_and_adds_pixel(db, sent):
    out = tracking.rewrite_html(HTML, sent, "m7", BASE, db=db)
    hrefs = re.findall(r"""href=["']([^"']+)["']""", out)
    assert hrefs[0].startswith(BASE + "/t/c/") and hrefs[1].startswith(BASE + "/t/c/")
    assert "mailto:help@example.com" in hrefs and "#top" in hrefs and "https://keep.example.com/" in hrefs
    assert out.count("/t/o/") == 1 and out.index("/t/o/") < out.index("</body>")
    t = tracking.read(db, _path(hrefs[0]).split("/")[-1], "click")
    assert t.link == "https://shop.example.com/sale?a=1&b=2" and t.message_id == "m7" and t.workspace_id == sent.id


def test_open_pixel_records_every_open(client, api, db, sent):
    out = tracking.rewrite_html("<p>x</p>", sent, "m7", BASE, db=db)
    pixel = _path(re.search(r'src="([^"]+)"', out).group(1))
    for _ in range(2):
        r = client.get(pixel, headers={"User-Agent": "Mail/1.0"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.content[:6] == b"GIF89a"
        assert "no-store" in r.headers["cache-control"]
    opens = events_named(api, "_email.open")
    assert len(opens) == 2
    a = opens[0]["attributes"]
    assert a["message_id"] == "m7" and a["journey_id"] == "spring" and a["step_id"] == "mail-1"
    assert a["user_agent"] == "Mail/1.0" and opens[0]["user_id"] == "dee"


def test_click_redirects_and_records_the_link(client, api, db, sent):
    url = tracking.click_url(db, sent, "m7", "https://shop.example.com/x?y=1", BASE)
    r = client.get(_path(url), follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example.com/x?y=1"
    [c] = events_named(api, "_email.click")
    assert c["attributes"]["link"] == "https://shop.example.com/x?y=1" and c["attributes"]["journey_version"] == 2


def test_tampered_tokens_are_refused_and_record_nothing(client, api, db, sent, other_api):
    url = tracking.click_url(db, sent, "m7", "https://shop.example.com/x", BASE)
    token = _path(url).split("/")[-1]
    payload, mac = token.split(".")
    # another link under the same signature
    forged = tracking._b64(tracking.msgspec.json.encode([1, sent.id, "c", "m7", "https://evil.example/"]))
    # the last two characters replaced by two others (a fixed "AA" was the real MAC one time in 4,096)
    tampered = mac[:-2] + ("AB" if mac[-2:] != "AB" else "BA")
    for bad in (f"{forged}.{mac}", f"{payload}.{tampered}", payload, "garbage", f"{payload}.{mac}x"):
        r = client.get(f"/t/c/{bad}", follow_redirects=False)
        assert r.status_code == 404, bad
    # a click token is no pixel and no unsubscribe token
    assert client.get(f"/t/o/{token}.gif").status_code == 404
    assert client.post(f"/t/u/{token}").status_code == 404
    # signed with another workspace's key
    globex = ws_of(db, "globex")
    other_key = tracking.workspace_key(db, globex)
    cross = tracking.make_token(other_key, sent.id, "c", "m7", "https://evil.example/")
    assert client.get(f"/t/c/{cross}", follow_redirects=False).status_code == 404
    assert events_named(api, "_email.click") == [] and api.get("/v1/endpoints/dee-mail").json()["opt_out"] is False


def test_unknown_message_redirects_without_recording(client, api, db, sent):
    url = tracking.click_url(db, sent, "never-sent", "https://shop.example.com/", BASE)
    r = client.get(_path(url), follow_redirects=False)
    assert r.status_code == 302 and events_named(api, "_email.click") == []


def test_one_click_unsubscribe(client, api, db, sent):
    url = tracking.unsubscribe_url(db, sent, "m7", BASE)
    page = client.get(_path(url))
    assert page.status_code == 200 and "<form method='post'>" in page.text
    assert api.get("/v1/endpoints/dee-mail").json()["opt_out"] is False  # a GET (link scanner) changes nothing
    r = client.post(_path(url), content="List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and "unsubscribed" in r.text
    assert api.get("/v1/endpoints/dee-mail").json()["opt_out"] is True
    client.post(_path(url), content="List-Unsubscribe=One-Click")
    [u] = events_named(api, "_email.unsubscribe")  # twice, recorded once
    assert u["id"] == "m7:unsubscribe" and u["attributes"]["method"] == "one_click"
    assert u["attributes"]["journey_id"] == "spring"


def test_secret_key_derives_workspace_keys(db, sent):
    k1 = tracking.workspace_key(db, sent, secret_key="master")
    assert k1 == tracking.workspace_key(db, sent.id, secret_key="master")
    assert k1 != tracking.workspace_key(db, sent, secret_key="other") != tracking.workspace_key(db, sent)
    with pytest.raises(ValueError, match="TIDINGS_PUBLIC_URL"):
        tracking.unsubscribe_url(db, sent, "m7", "")
