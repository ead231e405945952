"""Journeys over the API: the YAML from git, validated and versioned, activated on Temporal, runs visible.

The session shares one dev server and every test database numbers its first workspace 1, so journey ids
here differ from the runtime tests' (workflow ids are journey/{workspace}/{journey}/...)."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from litestar.testing import AsyncTestClient

from tidings.api.app import create_app
from tidings.engine.platform.config import Settings
from tidings.engine.ops.worker import build_workers
from tidings.engine.workspaces.service import create_key

WELCOME = """\
apiVersion: tidings/v1
kind: Journey
id: api-welcome
name: Welcome
entry:
  event: {name: signed_up, filter: {"==": [{"var": "event.attributes.plan"}, "pro"]}}
steps:
  - id: hello
    send: {channel: EMAIL, template: welcome-email}
"""


@pytest.fixture
async def stack(tmp_path, temporal_env):
    """The API app and a worker (its main and send task queues) on the session's dev server, over one SQLite
    file: the API activates journeys with their sends on the send queue, as `tidings worker` polls them."""
    settings = Settings.from_env(TIDINGS_HOME=str(tmp_path), TIDINGS_DATABASE_URL=f"sqlite:///{tmp_path / 't.db'}",
                                 TIDINGS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
                                 TIDINGS_TASK_QUEUE=f"api-{uuid.uuid4().hex[:8]}")
    async with AsyncTestClient(create_app(settings)) as client:
        db = client.app.state.db
        _, key = create_key(db, "acme")
        _, other = create_key(db, "globex")
        client.headers["Authorization"] = f"Bearer {key}"
        main, sends = build_workers(temporal_env.client, db, settings, workflow_failure_exception_types=[Exception])
        async with main, sends:
            yield client, other


async def _put_prerequisites(client) -> None:
    r = await client.post("/v1/segments", json={"id": "everyone", "name": "Everyone", "rule": {"==": [1, 1]}})
    assert r.status_code in (200, 201), r.text
    r = await client.put("/v1/templates/welcome-email", json={"channel": "EMAIL", "subject": "Hi {{ user.attributes.name }}",
                                                             "text": "Welcome"})
    assert r.status_code in (200, 201), r.text


async def test_put_is_versioned_and_idempotent(stack):
    client, _ = stack
    await _put_prerequisites(client)
    r = await client.put("/v1/journeys/api-welcome", content=WELCOME, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 200, r.text
    assert r.json()["new_version"] is True and r.json()["journey"]["version"] == 1
    r = await client.put("/v1/journeys/api-welcome", content=WELCOME, headers={"Content-Type": "application/yaml"})
    assert r.json()["new_version"] is False and r.json()["journey"]["version"] == 1
    r = await client.put("/v1/journeys/api-welcome", content=WELCOME.replace("name: Welcome", "name: Welcome v2"))
    assert r.json()["journey"]["version"] == 2
    got = (await client.get("/v1/journeys/api-welcome")).json()
    assert got["name"] == "Welcome v2" and "Welcome v2" in got["yaml"] and got["ir"]["start"] == "hello"
    assert [j["id"] for j in (await client.get("/v1/journeys")).json()] == ["api-welcome"]


async def test_bad_journey_reports_every_line(stack):
    client, _ = stack
    await _put_prerequisites(client)
    bad = WELCOME.replace("channel: EMAIL", "channel: FAX").replace("steps:", "steps:\n  - id: lonely\n    wait: 400d")
    r = await client.put("/v1/journeys/api-welcome", content=bad)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_journey"
    messages = {(d["line"], d["message"].split(" ")[0]) for d in err["details"]}
    assert any("FAX" in d["message"] for d in err["details"])
    assert any("365d" in d["message"] for d in err["details"]), messages
    assert (await client.get("/v1/journeys/api-welcome")).status_code == 404  # nothing half-written

    r = await client.post("/v1/journeys/validate", content=bad)
    assert r.status_code == 200 and r.json()["valid"] is False and len(r.json()["errors"]) >= 2
    r = await client.put("/v1/journeys/other-id", content=WELCOME)
    assert r.status_code == 400 and r.json()["error"]["field"] == "id"
    r = await client.put("/v1/journeys/api-welcome", content=WELCOME.replace("welcome-email", "no-such-template"))
    assert r.status_code == 400 and "unknown template `no-such-template`" in r.json()["error"]["message"]


async def test_activate_then_an_event_enters_the_customer(stack):
    client, other_key = stack
    await _put_prerequisites(client)
    await client.put("/v1/journeys/api-welcome", content=WELCOME)
    r = await client.post("/v1/journeys/api-welcome/activate")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active" and r.json()["active_version"] == 1
    await client.put("/v1/endpoints/ann-mail", json={"channel": "EMAIL", "address": "ann@example.com", "user_id": "ann"})
    await client.post("/v1/events", json={"events": [
        {"user_id": "ann", "name": "signed_up", "attributes": {"plan": "pro"}},
        {"user_id": "bob", "name": "signed_up", "attributes": {"plan": "free"}},  # filtered out
    ]})
    runs = []
    for _ in range(100):  # the admission workflow micro-batches entries; poll the run table, not the clock
        runs = (await client.get("/v1/journeys/api-welcome/runs")).json()
        if runs and runs[0]["status"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert [(r["user_id"], r["status"]) for r in runs] == [("ann", "completed")]
    assert [s["step"] for s in runs[0]["steps"]][:1] == ["hello"]
    assert (await client.get("/v1/journeys/api-welcome/runs", params={"user_id": "bob"})).json() == []

    assert (await client.post("/v1/journeys/api-welcome/pause")).json()["status"] == "paused"
    assert (await client.post("/v1/journeys/api-welcome/resume")).json()["status"] == "active"
    assert (await client.post("/v1/journeys/api-welcome/stop")).json()["status"] == "stopped"
    r = await client.post("/v1/journeys/api-welcome/explode")
    assert r.status_code == 400 and r.json()["error"]["field"] == "action"

    # Another workspace sees none of it.
    r = await client.get("/v1/journeys/api-welcome", headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 404
    r = await client.post("/v1/journeys/api-welcome/activate", headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 404
