"""TIDINGS_LOG_FORMAT=json: a real `tidings api` process writes only JSON lines, each request's line carries
its X-Request-Id, and a send's line its message id (and the request that sent it)."""
from __future__ import annotations

import json

import httpx

from tidings.engine.platform.db import make_engine
from tidings.engine.workspaces.service import create_key
from tests.messaging.conftest import smtp_sink  # noqa: F401  (fixture)
from tests.processes import ApiProcess, tidings_env


def test_json_lines_carry_request_and_message_ids(settings, tmp_path, smtp_sink):  # noqa: F811
    log = tmp_path / "api.log"
    api = ApiProcess(tidings_env(settings.home, settings.database_url, TIDINGS_LOG_FORMAT="json",
                                 TIDINGS_STREAM_WORKER="0"), log).start()
    try:
        db = make_engine(settings.database_url)  # migrated by the API's start
        _, key = create_key(db, "acme")
        db.dispose()
        headers = {"Authorization": f"Bearer {key}"}
        r = httpx.put(f"{api.url}/v1/users/ann", json={"attributes": {}},
                      headers={**headers, "X-Request-Id": "deploy-check-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "deploy-check-1"
        assert httpx.put(f"{api.url}/v1/templates/hi", json={"channel": "EMAIL", "subject": "Hi", "text": "Hello"},
                         headers=headers).status_code == 200
        sent = httpx.post(f"{api.url}/v1/messages", headers=headers, json={
            "channel": "EMAIL", "template_id": "hi", "recipients": [{"address": "zoe@example.org"}]})
        assert sent.status_code == 200, sent.text
        [result] = sent.json()["results"]
        assert result["status"] == "sent"
    finally:
        api.stop()

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # every line parses
    assert all({"timestamp", "level", "logger", "message"} <= set(entry) for entry in lines)
    [put] = [e for e in lines if e.get("request_id") == "deploy-check-1"]
    assert put["logger"] == "tidings.http" and put["route"] == "/v1/users/{user_id}" and put["status"] == 200
    assert put["method"] == "PUT" and put["duration_ms"] > 0
    [send] = [e for e in lines if e.get("message_id") == result["message_id"]]
    assert send["logger"] == "tidings.send" and send["outcome"] == "sent" and send["channel"] == "EMAIL"
    assert send["request_id"] == sent.headers["x-request-id"]  # the request that sent it
    [post] = [e for e in lines if e.get("route") == "/v1/messages"]
    assert post["request_id"] == sent.headers["x-request-id"]
