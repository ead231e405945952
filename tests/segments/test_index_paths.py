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


def wide_matches_cv(db, workspace_id=None):
    """Every customer has a wide row, and each slot holds its path's customer_value row (or nothing)."""
    from tidings.engine.segments import typed_index as paths

    with db.connect() as conn:
        workspace_id = workspace_id or conn.execute(text("SELECT max(workspace_id) FROM users")).scalar()
        slots = paths.slots(conn, workspace_id)
        users = set(conn.execute(text("SELECT id FROM users WHERE workspace_id = :w"), {"w": workspace_id}).scalars())
        wide = {r["user_pk"]: r for r in conn.execute(text(f"SELECT * FROM {paths.wide_table(workspace_id)}")).mappings()}
        assert set(wide) == users
        for path, s in slots.items():
            cv_rows = {r.user_pk: (r.kind, r.num, r.txt, r.ts) for r in conn.execute(text(
                "SELECT user_pk, kind, num, txt, ts FROM customer_value WHERE workspace_id = :w AND path = :p "
                "AND ep = 0 AND kind <> 'i'"), {"w": workspace_id, "p": path})}
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


def scan_indexes(db):
    from tidings.engine.segments import typed_index as paths

    with db.connect() as conn:
        workspace_id = conn.execute(text("SELECT max(workspace_id) FROM users")).scalar()
        return paths.scan_indexes(conn, workspace_id), paths.slots(conn, workspace_id), workspace_id


def full_plan(db, workspace_id, rule):
    """EXPLAIN QUERY PLAN of the rule's full evaluation, and its members."""
    from tidings.engine.segments.evaluate import compile_segment, full_evaluation_query, full_members

    compiled = compile_segment("probe", "dynamic", rule)
    with db.connect() as conn:
        query, params, wide = full_evaluation_query(conn, workspace_id, compiled, 0)
        assert wide
        plan = " ".join(r[-1] for r in conn.execute(text("EXPLAIN QUERY PLAN " + query), params))
        members = full_members(conn, workspace_id, compiled, 0)
        return plan, members


def test_scan_index_serves_full_evaluation_and_goes_with_its_segments(api, db):
    if db.dialect.name != "sqlite":
        return  # SQLite only: PostgreSQL scans the wide table
    plans, countries = ["pro", "free", "team", True, "pro"], ["US", "FR", "CA", "US", None]
    people = [{"user_id": f"u{i}", "attributes": {"plan": plans[i % 5], **({"country": countries[i % 4]} if i % 7 else {})},
               "metrics": {"spend": i % 100}} for i in range(300)]
    api.post("/v1/users/batch", json={"items": people})

    def expected(min_spend):
        return {p["user_id"] for p in people if p["attributes"]["plan"] == "pro"
                and p["attributes"].get("country") in ("US", "CA") and p["metrics"]["spend"] > min_spend}

    rule = lambda n: {"and": [{"==": [{"var": "attributes.plan"}, "pro"]},
                              {"in": [{"var": "attributes.country"}, ["US", "CA"]]},
                              {">": [{"var": "metrics.spend"}, n]}]}
    assert seg(api, "big", rule(50))["size"] == len(expected(50))
    indexes, slots, workspace_id = scan_indexes(db)
    assert len(indexes) == 1
    (name, columns), = indexes.items()
    plan_t, country_t, spend_n = (f"t{slots['attributes.plan']}", f"t{slots['attributes.country']}",
                                  f"n{slots['metrics.spend']}")
    # leads with the rule's equality and IN comparisons, then its range; holds every column the rule reads
    assert set(columns[:2]) == {plan_t, country_t} and columns[2] == spend_n
    assert {f"{c}{slots[p]}" for p in slots for c in "knt"} <= set(columns)
    plan, members = full_plan(db, workspace_id, rule(50))
    assert f"COVERING INDEX {name}" in plan
    assert len(members) == len(expected(50))
    # writes keep it current: a boolean plan (a rare kind) and changed values, then a full re-evaluation
    api.put("/v1/users/u0", json={"attributes": {"plan": True, "country": "US"}, "metrics": {"spend": 99}})
    api.put("/v1/users/u1", json={"attributes": {"plan": "pro", "country": "CA"}, "metrics": {"spend": 98}})
    for p in people[:2]:
        p["attributes"] = {"plan": True, "country": "US"} if p["user_id"] == "u0" else {"plan": "pro", "country": "CA"}
        p["metrics"] = {"spend": 99 if p["user_id"] == "u0" else 98}
    assert api.put("/v1/segments/big", json={"rule": rule(20)}).json()["size"] == len(expected(20))
    members = {m["user_id"] for m in api.get("/v1/segments/big/members?limit=1000").json()["items"]}
    assert members == expected(20) and "u1" in members
    # a rule over the same paths in another order is served by the same index
    seg(api, "other", {"and": [{">": [{"var": "metrics.spend"}, 90]}, {"==": [{"var": "attributes.plan"}, "pro"]}]})
    assert list(scan_indexes(db)[0]) == [name]
    # gone once no segment reads it (the next write syncs the index)
    api.delete("/v1/segments/big")
    api.delete("/v1/segments/other")
    api.put("/v1/users/u2", json={"attributes": {"plan": "free"}})
    assert scan_indexes(db)[0] == {}


def test_scan_indexes_are_capped_per_workspace(api, db):
    if db.dialect.name != "sqlite":
        return
    from tidings.engine.segments.typed_index import SCAN_INDEX_LIMIT

    n = SCAN_INDEX_LIMIT + 2
    api.post("/v1/users/batch", json={"items": [{"user_id": f"u{i}", "attributes": {f"a{k}": f"v{(i + k) % 3}" for k in range(n)}}
                                                for i in range(30)]})
    for k in range(n):
        assert seg(api, f"s{k}", {"==": [{"var": f"attributes.a{k}"}, "v1"]})["size"] == 10
    indexes, slots, workspace_id = scan_indexes(db)
    assert len(indexes) == SCAN_INDEX_LIMIT
    # a rule without a scan index of its own scans the table (not another rule's index with a lookup per row)
    plan, members = full_plan(db, workspace_id, {"and": [{"==": [{"var": f"attributes.a{n - 1}"}, "v1"]},
                                                  {"==": [{"var": "attributes.a0"}, "v1"]}]})
    assert "INDEX" not in plan and len(members) == sum(1 for i in range(30) if (i + n - 1) % 3 == 1 and i % 3 == 1)
    api.put("/v1/users/u0", json={"attributes": {"a0": "v1", "a9": "v1"}})  # past the limit evaluation still works
    assert api.get("/v1/segments/s0").json()["size"] == 11
    assert api.get(f"/v1/segments/s{n - 1}").json()["size"] == 11  # no scan index of its own
    assert {m["user_id"] for m in api.get(f"/v1/segments/s{n - 1}/members").json()["items"]} == \
        {f"u{i}" for i in range(30) if (i + n - 1) % 3 == 1} | {"u0"}
