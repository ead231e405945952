"""Channel configuration and templates through the API; workspace isolation; the YAML Template resource."""
from __future__ import annotations

from pathlib import Path

from tidings.engine.journeys.language.resources import load_resources
from tidings.engine.messaging.template_store import apply_template_resource, list_templates, template_exists
from tidings.engine.workspaces.service import ensure_workspace
from .conftest import seed

TWILIO = {"base_url": "http://127.0.0.1:9", "account_sid": "AC1", "auth_token": "very-secret-token",
          "from_number": "+15550001111"}


def test_secrets_are_never_returned_and_can_be_kept(api):
    r = api.put("/v1/channels/twilio-sms", json={"config": TWILIO, "rate_limit": 5})
    assert r.status_code == 200, r.text
    assert r.json()["config"]["auth_token"] == "***"
    listed = api.get("/v1/channels").json()
    assert "very-secret-token" not in str(listed)
    [item] = listed["items"]
    assert item["name"] == "twilio-sms" and item["channel_types"] == ["SMS"]
    assert item["rate_limit"] == 5 and item["effective_rate_limit"] == 5
    assert listed["routes"]["SMS"] == {"channel": "twilio-sms", "source": "workspace", "rate_limit": 5}
    assert listed["routes"]["EMAIL"]["channel"] == "outbox"
    # sending back what GET showed keeps the stored secret
    assert api.put("/v1/channels/twilio-sms", json={"config": {**TWILIO, "auth_token": "***"}}).status_code == 200
    assert api.get("/v1/channels").json()["items"][0]["effective_rate_limit"] == 1.0, "back to the channel default"


def test_env_smtp_serves_email_until_a_workspace_configures_it(api, smtp_sink):
    routes = api.get("/v1/channels").json()["routes"]
    assert routes["EMAIL"] == {"channel": "smtp", "source": "environment", "rate_limit": 1000.0}
    assert routes["SMS"]["channel"] == "outbox"
    assert api.put("/v1/channels/outbox", json={"channel_types": ["EMAIL"]}).status_code == 200
    r = api.post("/v1/messages", json={"channel": "EMAIL", "content": {"subject": "s", "text": "t"},
                                       "recipients": [{"address": "a@example.com"}]})
    assert r.json()["results"][0]["status"] == "sent"
    assert smtp_sink.mails == [] and len(api.get("/v1/outbox").json()["items"]) == 1
    assert api.delete("/v1/channels/outbox").status_code == 200
    assert api.get("/v1/channels").json()["routes"]["EMAIL"]["source"] == "environment"


def test_bad_channel_configuration(api):
    cases = [
        ("twilio-sms", {"config": {**TWILIO, "colour": "red"}}, 400, "config.colour"),
        ("twilio-sms", {"config": {k: v for k, v in TWILIO.items() if k != "account_sid"}}, 400, "config.account_sid"),
        ("smtp", {"config": {"host": "h", "from_address": "a@b.c", "port": "many"}}, 400, "config.port"),
        ("smtp", {"config": {"host": "h", "from_address": "a@b.c"}, "channel_types": ["SMS"]}, 400, "channel_types"),
        ("smtp", {"config": {"host": "h", "from_address": "a@b.c"}, "rate_limit": -1}, 400, "rate_limit"),
        ("twilio-sms", {"config": {**TWILIO, "auth_token": "***"}}, 400, "config.auth_token"),
        ("carrier-pigeon", {"config": {}}, 404, "name"),
    ]
    for name, body, status, field in cases:
        r = api.put(f"/v1/channels/{name}", json=body)
        assert (r.status_code, r.json()["error"]["field"]) == (status, field), (name, body, r.text)
        assert "very-secret-token" not in r.text
    assert api.get("/v1/channels").json()["items"] == []
    assert api.put("/v1/channels/outbox", json={}).status_code == 200  # outbox: every type
    r = api.put("/v1/channels/twilio-sms", json={"config": TWILIO})
    assert r.status_code == 409 and "outbox" in r.json()["error"]["message"]
    assert api.delete("/v1/channels/smtp").status_code == 404


def test_templates_crud_and_save_time_validation(api):
    body = {"channel": "EMAIL", "subject": "Hi {{ user.attributes.first_name }}", "text": "Hello",
            "locales": {"fr": {"subject": "Salut"}}}
    r = api.put("/v1/templates/hi", json=body)
    assert r.status_code == 200 and r.json()["version"] == 1
    assert api.put("/v1/templates/hi", json=body).json()["version"] == 1, "unchanged: same version"
    assert api.put("/v1/templates/hi", json={**body, "text": "Hey"}).json()["version"] == 2
    got = api.get("/v1/templates/hi").json()
    assert got["locales"]["fr"]["subject"] == "Salut" and got["text"] == "Hey"
    assert [t["id"] for t in api.get("/v1/templates").json()["items"]] == ["hi"]

    bad = api.put("/v1/templates/broken", json={"channel": "EMAIL", "subject": "ok",
                                                 "html": "<p>\n{% if data.x %}\nunclosed"})
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["field"] == "html" and "line" in err["message"]
    assert api.put("/v1/templates/b2", json={"channel": "SMS", "subject": "x", "body": "y"}).json()["error"]["field"] == "subject"
    assert api.put("/v1/templates/b3", json={"channel": "EMAIL", "subject": "x"}).json()["error"]["field"] == "html"
    assert api.put("/v1/templates/b4", json={"channel": "EMAIL", "subjet": "x"}).json()["error"]["field"] == "subjet"
    assert api.get("/v1/templates/broken").status_code == 404
    assert api.delete("/v1/templates/hi").status_code == 200
    assert api.get("/v1/templates").json()["items"] == []


def test_workspaces_see_only_their_own_templates_messages_channels_outbox(api, other_api):
    api.put("/v1/templates/t", json={"channel": "EMAIL", "subject": "s", "text": "acme"})
    api.put("/v1/channels/twilio-sms", json={"config": TWILIO})
    seed(api, "ana", endpoints=[("ana-mail", "EMAIL", "ana@example.com")])
    mid = api.post("/v1/messages", json={"channel": "EMAIL", "template_id": "t", "recipients": [
        {"user_id": "ana"}]}).json()["results"][0]["message_id"]
    assert other_api.get("/v1/templates/t").status_code == 404
    assert other_api.get("/v1/templates").json()["items"] == []
    assert other_api.get(f"/v1/messages/{mid}").status_code == 404
    assert other_api.get("/v1/channels").json()["items"] == []
    assert other_api.get("/v1/outbox").json()["items"] == []
    r = other_api.post("/v1/messages", json={"channel": "EMAIL", "template_id": "t",
                                             "recipients": [{"address": "x@example.com"}]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "template_id"
    r = other_api.post("/v1/messages", json={"channel": "EMAIL", "template_id": "t", "recipients": [
        {"endpoint_id": "ana-mail"}]})
    assert r.status_code == 400
    assert api.get(f"/v1/messages/{mid}").status_code == 200


def test_template_yaml_resources_apply_idempotently(api, db):
    workspace = ensure_workspace(db, "acme")
    docs = [r.doc for r in load_resources(Path(__file__).parents[2] / "journeys" / "templates.yaml")]
    assert [apply_template_resource(db, workspace, d) for d in docs] == ["created"] * len(docs)
    assert [apply_template_resource(db, workspace, d) for d in docs] == ["unchanged"] * len(docs)
    assert {t.id for t in list_templates(db, workspace)} == {d["id"] for d in docs}
    with db.connect() as conn:
        assert template_exists(conn, workspace.id, "welcome-email") and not template_exists(conn, workspace.id, "nope")
    seed(api, "ana", attributes={"first_name": "Ana"}, locale="fr", endpoints=[("m", "EMAIL", "ana@example.com")])
    api.post("/v1/messages", json={"channel": "EMAIL", "template_id": "welcome-email", "recipients": [{"user_id": "ana"}]})
    [mail] = api.get("/v1/outbox").json()["items"]
    assert mail["subject"] == "Bienvenue chez Example, Ana !"
    assert "https://example.com" in mail["text"], "the default for data.cta_url applies"
    bad = {**docs[0], "subject": "{{ oops"}
    try:
        apply_template_resource(db, workspace, bad)
    except Exception as exc:
        assert getattr(exc, "field", None) == "subject"
    else:
        raise AssertionError("a broken template was saved")
