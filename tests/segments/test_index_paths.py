"""The typed index holds only paths some segment reads; writes keep exactly those current."""
from __future__ import annotations

from sqlalchemy import text


def cv(db, path=None):
    with db.connect() as conn:
        q = "SELECT count(*) FROM customer_value" + (" WHERE path = :p" if path else "")
        return conn.execute(text(q), {"p": path}).scalar()


def seg(api, id, rule):
    r = api.post("/v1/segments", json={"id": id, "name": id, "rule": rule})
    assert r.status_code == 201, r.text
    return r.json()


def test_no_segments_no_index_rows(api, db):
    api.post("/v1/users/batch", json={"items": [{"user_id": f"u{i}", "attributes": {"plan": "pro"}} for i in range(20)]})
    api.put("/v1/endpoints/e1", json={"channel": "EMAIL", "address": "a@example.com", "user_id": "u1"})
    assert cv(db) == 0


def test_new_path_is_backfilled_and_maintained_then_dropped(api, db):
    api.post("/v1/users/batch", json={"items": [{"user_id": f"u{i}", "attributes": {"plan": "pro" if i % 2 else "free",
                                                                                     "city": "x"}} for i in range(10)]})
    assert seg(api, "pro", {"==": [{"var": "attributes.plan"}, "pro"]})["size"] == 5
    assert cv(db, "attributes.plan") == 10 and cv(db, "attributes.city") == 0
    # a write of an unread field leaves memberships and the index alone; a read one updates both
    api.put("/v1/users/u0", json={"attributes": {"city": "y"}})
    assert api.get("/v1/users/u0").json()["segments"] == []
    api.put("/v1/users/u0", json={"attributes": {"plan": "pro"}})
    assert api.get("/v1/users/u0").json()["segments"] == ["pro"]
    assert api.get("/v1/segments/pro").json()["size"] == 6
    # endpoint paths are indexed when a rule reads them inside some/all/none
    api.put("/v1/endpoints/e1", json={"channel": "EMAIL", "address": "a@example.com", "user_id": "u3"})
    assert seg(api, "mail", {"some": [{"var": "endpoints"}, {"==": [{"var": "channel"}, "EMAIL"]}]})["size"] == 1
    assert cv(db, "channel") == 1
    assert api.delete("/v1/segments/mail").status_code in (200, 204)
    api.put("/v1/users/u9", json={"attributes": {"plan": "free"}})  # next write syncs the index
    assert cv(db, "channel") == 0 and cv(db, "attributes.plan") == 10


def test_users_created_by_events_are_placed(api):
    seg(api, "no-plan", {"!": {"var": "attributes.plan"}})
    api.post("/v1/events", json={"events": [{"user_id": "newbie", "name": "open"}]})
    assert api.get("/v1/users/newbie").json()["segments"] == ["no-plan"]
