"""Events: idempotent batches, paging, filters, reserved names."""


def test_duplicate_ids_are_stored_once(api):
    batch = {"events": [{"id": "x1", "user_id": "u", "name": "buy"}, {"id": "x1", "user_id": "u", "name": "buy"}]}
    assert api.post("/v1/events", json=batch).json() == {"stored": 1, "duplicates": 1, "users_created": 1}
    assert api.post("/v1/events", json=batch).json() == {"stored": 0, "duplicates": 2, "users_created": 0}
    assert len(api.get("/v1/events").json()["items"]) == 1


def test_unknown_users_are_created(api):
    api.post("/v1/events", json={"events": [{"user_id": "newbie", "name": "signed_up",
                                              "attributes": {"plan": "free"}, "metrics": {"price": 0}}]})
    assert api.get("/v1/users/newbie").status_code == 200


def test_paging_and_filters(api):
    events = [{"id": f"p{i}", "user_id": "u1" if i % 2 else "u2", "name": "view" if i % 3 else "buy",
               "timestamp": f"2026-03-{i + 1:02d}T10:00:00Z"} for i in range(25)]
    api.post("/v1/events", json={"events": events})
    seen, cursor = [], None
    while True:
        page = api.get("/v1/events", params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"p{i}" for i in range(25)]
    buys = api.get("/v1/events", params={"name": "buy", "user_id": "u2"}).json()["items"]
    assert {e["id"] for e in buys} == {f"p{i}" for i in range(25) if i % 3 == 0 and i % 2 == 0}
    window = api.get("/v1/events", params={"since": "2026-03-05T00:00:00Z", "until": "2026-03-08T00:00:00Z"}).json()
    assert [e["timestamp"][:10] for e in window["items"]] == ["2026-03-05", "2026-03-06", "2026-03-07"]


def test_bad_cursor_and_limit(api):
    r = api.get("/v1/events", params={"cursor": "garbage!!"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "cursor"
    r = api.get("/v1/events", params={"limit": 5000})
    assert r.status_code == 400 and r.json()["error"]["field"] == "limit"


def test_event_by_endpoint_is_tied_to_its_user(api):
    api.put("/v1/endpoints/ph", json={"channel": "SMS", "address": "+14155550199", "user_id": "sam"})
    api.post("/v1/events", json={"events": [{"endpoint_id": "ph", "name": "reply"}]})
    e = api.get("/v1/events", params={"user_id": "sam"}).json()["items"][0]
    assert (e["user_id"], e["endpoint_id"], e["name"]) == ("sam", "ph", "reply")
