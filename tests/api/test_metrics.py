"""/metrics: what a Prometheus scrape of the API sees after real requests and a real send to an SMTP server
on loopback, and who may scrape it."""
from __future__ import annotations

import dataclasses

import pytest
from aiosmtpd.controller import Controller
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tidings.api.app import create_app
from tidings.engine.ops.devstack import free_port
from tidings.engine.workspaces.service import create_key
from tests.conftest import Api
from tests.messaging.conftest import Inbox

TOKEN = "scrape-token-for-tests"


class RefusingInbox(Inbox):
    """Accepts mail except for addresses at bounce.example, which it refuses permanently (550)."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@bounce.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def smtp(monkeypatch):
    inbox, port = RefusingInbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    for name, value in (("TIDINGS_SMTP_HOST", "127.0.0.1"), ("TIDINGS_SMTP_PORT", str(port)),
                        ("TIDINGS_SMTP_SECURITY", "none"), ("TIDINGS_SMTP_FROM", "Acme <news@acme.example>"),
                        ("TIDINGS_SMTP_RATE_LIMIT", "1000")):
        monkeypatch.setenv(name, value)
    yield inbox
    controller.stop()


@pytest.fixture
def scraped(settings):
    """A client of an API whose /metrics is on (TIDINGS_METRICS_TOKEN), and a workspace's API on it."""
    with TestClient(create_app(dataclasses.replace(settings, metrics_token=TOKEN)),
                    raise_server_exceptions=False) as client:
        _, key = create_key(client.app.state.db, "acme-corp")
        yield client, Api(client, key)


def scrape(client) -> dict[tuple[str, frozenset], float]:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_requests_and_a_real_send_move_the_counters_by_what_happened(scraped, smtp):
    client, api = scraped
    assert api.post("/v1/segments", json={"id": "adults", "name": "Adults",
                                          "rule": {">=": [{"var": "attributes.age"}, 18]}}).status_code == 201
    before = scrape(client)
    for i, age in enumerate((17, 30, 41)):
        assert api.put(f"/v1/users/user-{i}", json={"attributes": {"age": age}}).status_code == 200
    assert api.get("/v1/users/nobody-here").status_code == 404
    assert client.get("/v1/users/user-1").status_code == 401  # no key
    assert api.put("/v1/templates/hi", json={"channel": "EMAIL", "subject": "Hi", "text": "Hello"}).status_code == 200
    r = api.post("/v1/messages", json={"channel": "EMAIL", "template_id": "hi", "recipients": [
        {"address": "ana@example.com"}, {"address": "bob@example.com"}, {"address": "gone@bounce.example"}]})
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == ["sent", "sent", "failed"]
    assert sorted(rcpt for _, rcpts, _ in smtp.mails for rcpt in rcpts) == ["ana@example.com", "bob@example.com"]
    after = scrape(client)

    requests = "tidings_http_requests_total"
    # by route template, never the raw path: one series for every user id
    assert moved(before, after, requests, method="PUT", route="/v1/users/{user_id}", status="200") == 3
    assert moved(before, after, requests, method="GET", route="/v1/users/{user_id}", status="404") == 1
    assert moved(before, after, requests, method="GET", route="/v1/users/{user_id}", status="401") == 1
    assert moved(before, after, requests, method="POST", route="/v1/messages", status="200") == 1
    assert moved(before, after, "tidings_http_request_duration_seconds_count",
                 method="PUT", route="/v1/users/{user_id}") == 3
    assert moved(before, after, "tidings_http_request_duration_seconds_sum",
                 method="PUT", route="/v1/users/{user_id}") > 0
    assert moved(before, after, "tidings_sends_total", channel="EMAIL", outcome="sent") == 2
    assert moved(before, after, "tidings_sends_total", channel="EMAIL", outcome="failed") == 1
    assert moved(before, after, "tidings_provider_call_duration_seconds_count", channel="EMAIL") >= 1
    assert moved(before, after, "tidings_rate_limit_wait_seconds_count") >= 1  # the channel has a rate limit
    # each upsert re-evaluated the saved segment for its customer
    assert moved(before, after, "tidings_segment_evaluation_seconds_count", kind="incremental") == 3

    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    for private in ("acme-corp", "user-1", "nobody-here", "ana@example.com", "bounce.example", "adults", "hi"):
        assert f'"{private}' not in text and f"/{private}" not in text, private  # no workspace data in labels


def test_saving_a_segment_times_its_full_evaluation(scraped):
    client, api = scraped
    for i in range(5):
        assert api.put(f"/v1/users/u{i}", json={"attributes": {"plan": "pro" if i % 2 else "free"}}).status_code == 200
    before = scrape(client)
    r = api.post("/v1/segments", json={"id": "pro", "name": "Pro", "rule": {"==": [{"var": "attributes.plan"}, "pro"]}})
    assert r.status_code == 201, r.text
    assert moved(before, scrape(client), "tidings_segment_evaluation_seconds_count", kind="full") == 1


def test_metrics_need_the_scrape_token_and_are_off_without_one(scraped, client):
    scraping, api = scraped
    assert scraping.get("/metrics").status_code == 401
    assert api.get("/metrics").json()["error"]["code"] == "unauthorized"  # a workspace key is not the token
    r = scraping.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert r.status_code == 401 and "TIDINGS_METRICS_TOKEN" in r.json()["error"]["message"]
    off = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})  # no token configured
    assert off.status_code == 401 and off.json()["error"]["message"].startswith("metrics are off")


def test_made_up_methods_and_unmatched_paths_add_no_series_of_their_own(scraped):
    client, api = scraped
    before = scrape(client)
    for i in range(3):
        client.request(f"BREW{i}", f"/no/such/path/{i}")
        api.get(f"/v1/nothing-here-{i}")
    after = scrape(client)
    requests = "tidings_http_requests_total"
    assert not any(name == requests and dict(labels)["method"].startswith("BREW") for name, labels in after)
    assert not any(name == requests and "nothing-here" in dict(labels)["route"] for name, labels in after)
    assert moved(before, after, requests, method="other", route="unrouted", status="404") == 3
    assert moved(before, after, requests, method="GET", route="unrouted", status="404") == 3
