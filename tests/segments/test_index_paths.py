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


def wide_matches_cv(db, ws_id=None):
    """Every customer has a wide row, and each slot holds its path's customer_value row (or nothing)."""
    from engine.segments import paths

    with db.connect() as conn:
        ws_id = ws_id or conn.execute(text("SELECT max(workspace_id) FROM users")).scalar()
        slots = paths.slots(conn, ws_id)
        users = set(conn.execute(text("SELECT id FROM users WHERE workspace_id = :w"), {"w": ws_id}).scalars())
        wide = {r["user_pk"]: r for r in conn.execute(text(f"SELECT * FROM {paths.wide_table(ws_id)}")).mappings()}
        assert set(wide) == users
        for path, s in slots.items():
            cv_rows = {r.user_pk: (r.kind, r.num, r.txt, r.ts) for r in conn.execute(text(
                "SELECT user_pk, kind, num, txt, ts FROM customer_value WHERE workspace_id = :w AND path = :p "
                "AND ep = 0 AND kind <> 'i'"), {"w": ws_id, "p": path})}
            for pk, w in wide.items():
                assert (w[f"k{s}"], w[f"n{s}"], w[f"t{s}"], w[f"d{s}"]) == cv_rows.get(pk, (None,) * 4), (path, pk)
        return slots


def test_wide_table_follows_writes_erasure_and_path_changes(api, db):
    api.post("/v1/users/batch", json={"items": [{"user_id": f"u{i}", "attributes": {"plan": ["pro", "free", 5, "7"][i % 4],
                                                                                     "tags": ["a", "b"], "signup": "2024-01-0%d" % (i % 9 + 1)}}
                                                for i in range(12)]})
    seg(api, "pro", {"==": [{"var": "attributes.plan"}, "pro"]})
    seg(api, "tagged", {"in": ["a", {"var": "attributes.tags"}]})
    assert set(wide_matches_cv(db)) == {"attributes.plan", "attributes.tags"}
    api.put("/v1/users/u0", json={"attributes": {"plan": "free"}})
    api.post("/v1/users/batch", json={"items": [{"user_id": "new", "attributes": {"plan": "pro"}}]})
    api.post("/v1/events", json={"events": [{"user_id": "via-event", "name": "open"}]})
    assert api.delete("/v1/users/u3").status_code == 200
    wide_matches_cv(db)
    assert api.get("/v1/segments/pro").json()["size"] == 3  # u4, u8, new
    api.delete("/v1/segments/tagged")
    seg(api, "recent", {"after": ["attributes.signup", "2024-01-05"]})  # reuses the freed slot
    slots = wide_matches_cv(db)
    assert sorted(slots.values()) == [0, 1]
    assert api.get("/v1/segments/recent").json()["size"] == 4  # signup 06..09 among u0-u11 minus u3
