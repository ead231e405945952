"""Endpoints: Pinpoint's model of one address on one channel, owned by a user."""


def test_endpoint_without_user_becomes_its_own_user(api):
    r = api.put("/v1/endpoints/dev-1", json={"channel": "PUSH", "address": "fcm-token-1"})
    assert r.status_code == 200 and r.json()["user_id"] == "dev-1"
    assert api.get("/v1/users/dev-1").json()["endpoints"][0]["endpoint_id"] == "dev-1"


def test_full_endpoint_round_trip_and_merge(api):
    body = {
        "channel": "EMAIL", "address": "zoe@example.com", "user_id": "zoe",
        "attributes": {"interests": ["jazz", "golf"]}, "metrics": {"sessions": 4}, "opt_out": False,
        "demographic": {"platform": "ios", "locale": "en-US", "timezone": "America/New_York", "app_version": "2.1",
                        "make": "Apple", "model": "iPhone"},
        "location": {"country": "US", "city": "Boston", "postal_code": "02110", "latitude": 42.36, "longitude": -71.05},
        "effective_date": "2026-01-02T03:04:05Z",
    }
    r = api.put("/v1/endpoints/zoe-mail", json=body)
    assert r.status_code == 200, r.text
    got = api.get("/v1/endpoints/zoe-mail").json()
    assert got["demographic"]["make"] == "Apple" and got["location"]["city"] == "Boston"
    assert got["effective_date"] == "2026-01-02T03:04:05Z"
    r = api.put("/v1/endpoints/zoe-mail", json={"attributes": {"interests": None, "team": ["red"]}, "opt_out": True})
    got = r.json()
    assert got["attributes"] == {"team": ["red"]} and got["opt_out"] is True
    assert got["address"] == "zoe@example.com" and got["metrics"] == {"sessions": 4}


def test_moving_an_endpoint_to_another_user(api):
    api.put("/v1/endpoints/m", json={"channel": "SMS", "address": "+447700900123", "user_id": "a"})
    api.put("/v1/endpoints/m", json={"user_id": "b"})
    assert api.get("/v1/users/a").json()["endpoints"] == []
    assert [e["endpoint_id"] for e in api.get("/v1/users/b").json()["endpoints"]] == ["m"]


def test_delete_endpoint_keeps_user_and_events(api):
    api.put("/v1/endpoints/k", json={"channel": "EMAIL", "address": "k@example.com", "user_id": "kim"})
    api.post("/v1/events", json={"events": [{"endpoint_id": "k", "name": "open_app"}]})
    assert api.delete("/v1/endpoints/k").status_code == 200
    assert api.get("/v1/endpoints/k").status_code == 404
    assert api.get("/v1/users/kim").json()["endpoints"] == []
    events = api.get("/v1/events", params={"user_id": "kim"}).json()["items"]
    assert [e["name"] for e in events] == ["open_app"] and events[0]["endpoint_id"] is None


def test_endpoint_batch(api):
    items = [{"endpoint_id": f"e{i}", "channel": "EMAIL", "address": f"u{i}@example.com", "user_id": f"u{i % 10}"}
             for i in range(100)]
    r = api.post("/v1/endpoints/batch", json={"items": items})
    assert r.status_code == 200 and r.json() == {"written": 100, "created": 100}
    assert len(api.get("/v1/users/u3").json()["endpoints"]) == 10
