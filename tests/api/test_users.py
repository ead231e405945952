"""Users over the API: merge semantics, reads, erasure."""


def test_put_merges_attributes_and_null_removes(api):
    r = api.put("/v1/users/ann", json={"attributes": {"plan": "pro", "tags": ["a", "b"], "vip": True},
                                       "metrics": {"spend": 12.5}, "timezone": "Europe/Paris", "locale": "fr-FR"})
    assert r.status_code == 200, r.text
    r = api.put("/v1/users/ann", json={"attributes": {"vip": None, "age": 31}, "metrics": {"orders": 2}})
    body = r.json()
    assert body["attributes"] == {"plan": "pro", "tags": ["a", "b"], "age": 31}
    assert body["metrics"] == {"spend": 12.5, "orders": 2}
    assert body["timezone"] == "Europe/Paris" and body["locale"] == "fr-FR"
    r = api.put("/v1/users/ann", json={"timezone": None})
    assert r.json()["timezone"] is None and r.json()["locale"] == "fr-FR"


def test_get_returns_endpoints(api):
    api.put("/v1/users/bob", json={})
    api.put("/v1/endpoints/bob-mail", json={"channel": "EMAIL", "address": "bob@example.com", "user_id": "bob"})
    body = api.get("/v1/users/bob").json()
    assert [e["endpoint_id"] for e in body["endpoints"]] == ["bob-mail"]
    assert body["endpoints"][0]["address"] == "bob@example.com"


def test_ids_with_slashes_and_unicode_round_trip(api):
    r = api.put("/v1/users/team%2Fälice%20x", json={"attributes": {"x": "1"}})
    assert r.status_code == 200
    assert r.json()["user_id"] == "team/älice x"
    assert api.get("/v1/users/team%2Fälice%20x").json()["attributes"] == {"x": "1"}


def test_delete_erases_user_endpoints_and_events(api):
    api.put("/v1/endpoints/c1", json={"channel": "SMS", "address": "+14155550100", "user_id": "carol"})
    api.post("/v1/events", json={"events": [{"user_id": "carol", "name": "login"}]})
    assert api.delete("/v1/users/carol").status_code == 200
    assert api.get("/v1/users/carol").status_code == 404
    assert api.get("/v1/endpoints/c1").status_code == 404
    assert api.get("/v1/events", params={"name": "login"}).json()["items"] == []


def test_unknown_user_is_404_with_field(api):
    r = api.get("/v1/users/nobody")
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "not_found", "message": "no user 'nobody'", "field": "user_id"}


def test_batch_upserts_all(api):
    items = [{"user_id": f"u{i}", "attributes": {"n": str(i)}} for i in range(250)]
    r = api.post("/v1/users/batch", json={"items": items})
    assert r.status_code == 200 and r.json() == {"written": 250, "created": 250}
    assert api.get("/v1/users/u249").json()["attributes"] == {"n": "249"}
    r = api.post("/v1/users/batch", json={"items": [{"user_id": "u1", "metrics": {"m": 1}}, {"user_id": "u1", "metrics": {"k": 2}}]})
    assert r.json() == {"written": 2, "created": 0}
    assert api.get("/v1/users/u1").json()["metrics"] == {"m": 1, "k": 2}
