"""Every /v1 call needs a live workspace key, and no key reaches another workspace's data."""
from tidings.engine.workspaces.service import create_key, revoke_key


def test_missing_and_unknown_keys_get_401(client, api):
    assert client.get("/v1/users/x").status_code == 401
    r = client.get("/v1/users/x", headers={"Authorization": "Bearer tk_nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/events", headers={"Authorization": api.key}).status_code == 401  # no "Bearer"


def test_health_needs_no_key(client):
    assert client.get("/health").json() == {"status": "ok"}


def test_revoked_key_stops_working(client, db):
    _, key = create_key(db, "initech")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.put("/v1/users/a", json={}, headers=headers).status_code == 200
    revoke_key(db, key[:11])
    assert client.get("/v1/users/a", headers=headers).status_code == 401


def test_workspaces_are_isolated(api, other_api):
    api.put("/v1/users/shared-id", json={"attributes": {"owner": "acme"}})
    api.put("/v1/endpoints/ep", json={"channel": "EMAIL", "address": "a@acme.test", "user_id": "shared-id"})
    api.post("/v1/events", json={"events": [{"id": "e1", "user_id": "shared-id", "name": "buy"}]})

    assert other_api.get("/v1/users/shared-id").status_code == 404
    assert other_api.get("/v1/endpoints/ep").status_code == 404
    assert other_api.get("/v1/events").json()["items"] == []
    assert other_api.delete("/v1/users/shared-id").status_code == 404

    # The same ids in the other workspace are different customers and events.
    other_api.put("/v1/users/shared-id", json={"attributes": {"owner": "globex"}})
    r = other_api.post("/v1/events", json={"events": [{"id": "e1", "user_id": "shared-id", "name": "buy"}]})
    assert r.json()["stored"] == 1
    assert api.get("/v1/users/shared-id").json()["attributes"] == {"owner": "acme"}
    assert other_api.get("/v1/users/shared-id").json()["attributes"] == {"owner": "globex"}
    assert len(api.get("/v1/events").json()["items"]) == 1
