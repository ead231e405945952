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


def test_key_lookups_leave_writes_atomic(api, db):
    """The key lookup reads outside a transaction (autocommit on PostgreSQL, for that one statement): the pooled
    connections it used must come back as they were, or a later write would commit statement by statement
    and a failed one leave half of itself behind."""
    from sqlalchemy import text

    from tidings.engine.platform.db import writing

    for i in range(8):
        assert api.put(f"/v1/users/before-{i}", json={"attributes": {"n": i}}).status_code == 200
    held = [db.connect() for _ in range(db.pool.checkedin())]  # every pooled connection, each in turn below
    for conn in held:
        conn.close()
    for _ in range(len(held)):
        try:
            with writing(db) as conn:
                conn.execute(text("UPDATE users SET locale = 'xx-XX' WHERE user_id = 'before-0'"))
                raise RuntimeError("the write fails after its first statement")
        except RuntimeError:
            pass
    assert api.get("/v1/users/before-0").json()["locale"] is None


def test_revoked_key_is_refused_on_the_very_next_call(client, db):
    _, key = create_key(db, "initech")
    headers = {"Authorization": f"Bearer {key}"}
    for i in range(20):  # the lookup is warm: the same key, the same pooled connections
        assert client.put(f"/v1/users/u{i}", json={"attributes": {"n": i}}, headers=headers).status_code == 200
    revoke_key(db, key[:11])
    r = client.put("/v1/users/u0", json={"attributes": {"n": -1}}, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
