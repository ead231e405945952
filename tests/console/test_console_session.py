"""The console's session and refusals over HTTP (no browser needed): revoked keys and tampered cookies
sign out, bad input is a page naming the problem with nothing saved, the console can be turned off."""
from __future__ import annotations

import html
import random
import re

import yaml
from litestar.testing import TestClient

from tidings.api.app import create_app
from tidings.engine.workspaces.service import authenticate, revoke_key

TOKEN = re.compile(r'name="_csrf_token" value="([^"]+)"')


def api_workspace(client: TestClient, api):
    return authenticate(client.app.state.db, f"Bearer {api.key}")


def _sign_in(client: TestClient, key: str) -> str:
    """Signs in; returns a CSRF token of the session for the forms to come."""
    token = TOKEN.search(client.get("/console/sign-in").text).group(1)
    r = client.post("/console/sign-in", data={"key": key, "_csrf_token": token}, follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"] == "/console/", r.text
    return TOKEN.search(client.get("/console/").text).group(1)


def test_a_revoked_key_ends_its_sessions(client, api):
    _sign_in(client, api.key)
    assert client.get("/console/segments").status_code == 200
    revoke_key(client.app.state.db, api.key)
    r = client.get("/console/segments", follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"] == "/console/sign-in"


def test_a_tampered_session_cookie_is_no_session(client, api):
    _sign_in(client, api.key)
    value = client.cookies.get("tidings_console")
    rnd = random.Random(13)
    # cut anywhere, or its end rewritten: in the sealed part or in the clear part Litestar reads first
    forged = [value[:n] for n in range(1, len(value), 7)] + [
        value[:-n] + "".join(rnd.choice('AZaz09+/="{}:') for _ in range(n)) for n in range(1, len(value), 5)]
    for cookie in forged:
        client.cookies.set("tidings_console", cookie, path="/console")
        r = client.get("/console/customers", follow_redirects=False)
        assert r.status_code in (302, 303) and r.headers["location"] == "/console/sign-in", cookie


def test_an_htmx_fragment_without_a_session_sends_the_page_to_sign_in(client):
    r = client.post("/console/segments/preview", data={"rule": "true"}, headers={"HX-Request": "true"})
    assert r.status_code in (401, 403)
    if r.status_code == 401:
        assert r.headers["HX-Redirect"] == "/console/sign-in"


def test_an_invalid_rule_is_explained_and_nothing_is_saved(client, api):
    token = _sign_in(client, api.key)
    r = client.post("/console/segments", data={"segment_id": "broken", "name": "Broken", "rule": '{"nope": [1]}',
                                               "_csrf_token": token})
    assert r.status_code == 400 and 'role="alert"' in r.text and "nope" in r.text
    assert "Broken" in r.text  # the form comes back as typed
    assert api.get("/v1/segments/broken").status_code == 404
    preview = client.post("/console/segments/preview", data={"rule": "{", "_csrf_token": token})
    assert "not JSON" in preview.text


def test_customers_are_found_by_endpoint_id_and_address(client, api):
    api.put("/v1/users/ana", json={"attributes": {"first_name": "Ana"}})
    api.put("/v1/endpoints/ana-phone", json={"user_id": "ana", "channel": "SMS", "address": "+14155550100"})
    _sign_in(client, api.key)
    for q in ("ana", "ana-phone", "+14155550100"):
        r = client.get("/console/customers", params={"q": q})
        assert str(r.url).endswith("/console/customers/ana") and "Ana" in r.text, q


def test_a_bad_date_range_names_the_field(client, api):
    _sign_in(client, api.key)
    r = client.get("/console/", params={"since": "yesterday"})
    assert r.status_code == 400 and "since is a date" in r.text


def test_the_console_can_be_turned_off(settings, monkeypatch):
    monkeypatch.setenv("TIDINGS_CONSOLE", "off")
    with TestClient(create_app(settings)) as client:
        assert client.get("/console/sign-in").status_code == 404
        assert client.get("/console/static/htmx.min.js").status_code == 404
        assert client.get("/health").status_code == 200


def test_tidings_dev_prints_the_console_address_unless_it_is_off(settings, monkeypatch):
    from tidings.engine.ops.devstack import DevStack, Ports

    stack = DevStack(settings, Ports())
    assert "Web console      http://127.0.0.1:8000/console/" in stack.banner()
    monkeypatch.setenv("TIDINGS_CONSOLE", "off")
    assert "console" not in stack.banner()


def test_the_console_stays_out_of_the_api_description(client):
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/console")]


def test_a_customers_event_timeline_pages(client, api):
    api.put("/v1/users/busy", json={})
    r = api.post("/v1/events", json={"events": [{"id": f"e{i}", "user_id": "busy", "name": f"step_{i:02d}"}
                                                for i in range(25)]})
    assert r.status_code < 300, r.text
    _sign_in(client, api.key)
    first = client.get("/console/customers/busy").text
    assert "step_00" in first and "step_19" in first and "step_20" not in first
    later = re.search(r'href="\?events=([^"]+)" rel="next"', first).group(1)
    second = client.get("/console/customers/busy", params={"events": later}).text
    assert "step_20" in second and "step_24" in second and "step_19" not in second
    assert 'rel="next"' not in second


def test_a_segment_copied_as_yaml_applies_unchanged(client, api):
    from tidings.engine.segments.service import apply_segment_resource

    rule = {"and": [{"==": [{"var": "attributes.plan"}, "pro"]}, {">": [{"var": "metrics.spend"}, 50]}]}
    assert api.post("/v1/segments", json={"id": "big-pros", "name": "Big pros · été", "rule": rule}).status_code == 201
    _sign_in(client, api.key)
    text = re.search(r'<pre id="segment-yaml"[^>]*>(.*?)</pre>', client.get("/console/segments/big-pros").text, re.DOTALL).group(1)
    doc = yaml.safe_load(html.unescape(text))
    assert doc == {"apiVersion": "tidings/v1", "kind": "Segment", "id": "big-pros", "name": "Big pros · été", "rule": rule}
    assert apply_segment_resource(client.app.state.db, api_workspace(client, api), doc) == "unchanged"
