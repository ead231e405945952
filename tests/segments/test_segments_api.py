"""Segments over the API: rules validated with pointers, memberships current on return, management."""
from __future__ import annotations

import time

from sqlalchemy import insert

from tidings.engine.segments.tables import journey_segment_refs


def seg(api, id, rule, name=None):
    r = api.post("/v1/segments", json={"id": id, "name": name or id, "rule": rule})
    assert r.status_code == 201, r.text
    return r.json()


def members(api, sid):
    return sorted(m["user_id"] for m in api.get(f"/v1/segments/{sid}/members", params={"limit": 1000}).json()["items"])


def seg_events(api, user):
    items = api.get("/v1/events", params={"user_id": user}).json()["items"]
    return [(e["name"], e["attributes"]["segment_id"]) for e in items if e["name"].startswith("_segment.")]


def test_dynamic_segment_is_current_on_every_write(api):
    api.put("/v1/users/ann", json={"attributes": {"plan": "pro"}})
    api.put("/v1/users/bob", json={"attributes": {"plan": "free"}})
    body = seg(api, "pro", {"==": [{"var": "attributes.plan"}, "pro"]})
    assert body["size"] == 1 and body["version"] == 1
    assert members(api, "pro") == ["ann"]
    # write -> membership is current when the write returns, with an enter event
    api.put("/v1/users/bob", json={"attributes": {"plan": "pro"}})
    assert members(api, "pro") == ["ann", "bob"]
    assert api.get("/v1/users/bob").json()["segments"] == ["pro"]
    assert seg_events(api, "bob") == [("_segment.enter", "pro")]
    api.put("/v1/users/ann", json={"attributes": {"plan": None}})
    assert members(api, "pro") == ["bob"]
    assert seg_events(api, "ann") == [("_segment.exit", "pro")]
    api.post("/v1/users/batch", json={"items": [{"user_id": f"c{i}", "attributes": {"plan": "pro"}} for i in range(30)]})
    assert api.get("/v1/segments/pro").json()["size"] == 31
    api.delete("/v1/users/bob")
    assert "bob" not in members(api, "pro")


def test_endpoints_events_and_references(api):
    seg(api, "emailable", {"some": [{"var": "endpoints"}, {"and": [{"==": [{"var": "channel"}, "EMAIL"]},
                                                                   {"!": {"var": "opt_out"}}]}]})
    seg(api, "buyers", {"performed": {"event": "purchase", "count": [">=", 2], "within": "30d"}})
    seg(api, "vip", {"and": [{"in_segment": "emailable"}, {"in_segment": "buyers"}]})
    api.put("/v1/endpoints/e1", json={"channel": "EMAIL", "address": "dan@example.com", "user_id": "dan"})
    assert members(api, "emailable") == ["dan"] and members(api, "vip") == []
    api.post("/v1/events", json={"events": [{"user_id": "dan", "name": "purchase"}]})
    assert members(api, "buyers") == []
    api.post("/v1/events", json={"events": [{"user_id": "dan", "name": "purchase"}]})
    assert members(api, "buyers") == ["dan"] and members(api, "vip") == ["dan"]
    api.put("/v1/endpoints/e1", json={"opt_out": True})
    assert members(api, "emailable") == [] and members(api, "vip") == []
    assert api.get("/v1/users/dan").json()["segments"] == ["buyers"]


def test_rule_errors_name_the_json_pointer_and_write_nothing(api):
    cases = [
        ({"and": [{"==": [{"var": "attributes.x"}, 1]}, {"frobnicate": [1]}]}, "rule/and/1", "unknown_operator"),
        ({"and": [{"in_segment": "nope"}]}, "rule/and/0/in_segment", "unknown_segment"),
        ({"or": [{"==": [{"var": "attributes.x"}]}]}, "rule/or/0", "ArgumentCount"),
        ({"==": [{"var": "secret.x"}, 1]}, "rule/==/0/var", "unknown_var"),
        ({"performed": {"event": "x", "within": "soon"}}, "rule/performed/within", "invalid"),
    ]
    for rule, field, code in cases:
        r = api.post("/v1/segments", json={"id": "bad", "name": "bad", "rule": rule})
        assert r.status_code == 400, (rule, r.text)
        err = r.json()["error"]
        assert err["field"] == field, (rule, err)
        assert err["details"][0]["code"] == code
    assert api.get("/v1/segments").json()["items"] == []


def test_cycles_rejected(api):
    seg(api, "a", {"==": [{"var": "attributes.x"}, 1]})
    seg(api, "b", {"in_segment": "a"})
    r = api.put("/v1/segments/a", json={"rule": {"in_segment": "b"}})
    assert r.status_code == 400 and "cycle" in r.json()["error"]["message"]


def test_versions_duplicate_delete(api, db):
    api.put("/v1/users/ann", json={"attributes": {"n": 5}})
    seg(api, "big", {">": [{"var": "attributes.n"}, 10]})
    assert members(api, "big") == []
    r = api.put("/v1/segments/big", json={"rule": {">": [{"var": "attributes.n"}, 1]}})
    assert r.json()["version"] == 2 and r.json()["size"] == 1
    assert [v["version"] for v in api.get("/v1/segments/big/versions").json()["items"]] == [1, 2]
    assert seg_events(api, "ann") == [("_segment.enter", "big")]
    d = api.post("/v1/segments/big/duplicate", json={"id": "big2"})
    assert d.status_code == 201 and d.json()["size"] == 1 and d.json()["rule"] == r.json()["rule"]
    listed = {s["id"]: s["size"] for s in api.get("/v1/segments").json()["items"]}
    assert listed == {"big": 1, "big2": 1}
    with db.begin() as conn:
        conn.execute(insert(journey_segment_refs).values(workspace_id=1, journey_id="welcome", segment_id="big2",
                                                         active=True))
    r = api.delete("/v1/segments/big2")
    assert r.status_code == 409 and "welcome" in r.json()["error"]["message"]
    assert api.delete("/v1/segments/big").status_code == 200
    assert api.get("/v1/segments/big").status_code == 404


def test_members_pages_and_export(api):
    api.post("/v1/users/batch", json={"items": [{"user_id": f"u{i:03d}", "attributes": {"k": "y"}} for i in range(25)]})
    seg(api, "k", {"==": [{"var": "attributes.k"}, "y"]})
    seen, cursor = [], None
    while True:
        page = api.get("/v1/segments/k/members", params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
        seen += [m["user_id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 25 and len(set(seen)) == 25
    nd = api.get("/v1/segments/k/export", params={"format": "ndjson"})
    assert nd.status_code == 200 and len(nd.text.strip().splitlines()) == 25
    cs = api.get("/v1/segments/k/export", params={"format": "csv"})
    assert cs.text.splitlines()[0].startswith("user_id") and len(cs.text.strip().splitlines()) == 26
    assert api.get("/v1/segments/nope/export").status_code == 404


def test_segments_are_per_workspace(api, other_api):
    api.put("/v1/users/ann", json={"attributes": {"p": "x"}})
    other_api.put("/v1/users/ann", json={"attributes": {"p": "x"}})
    seg(api, "s", {"==": [{"var": "attributes.p"}, "x"]})
    assert other_api.get("/v1/segments/s").status_code == 404
    assert other_api.get("/v1/users/ann").json()["segments"] == []


def test_clock_rules_and_dates(api):
    api.put("/v1/users/old", json={"attributes": {"signup": "2020-01-01T00:00:00Z"}})
    api.put("/v1/users/new", json={"attributes": {"signup": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
    seg(api, "recent", {"after": ["attributes.signup", "now-30d"]})
    seg(api, "on-day", {"on": ["attributes.signup", "2020-01-01"]})
    seg(api, "between", {"between": ["attributes.signup", "2019-06-01", "2020-06-01"]})
    assert members(api, "recent") == ["new"]
    assert members(api, "on-day") == ["old"] and members(api, "between") == ["old"]
    seg(api, "inactive", {"inactive": "7d"})
    assert members(api, "inactive") == ["new", "old"]
    api.post("/v1/events", json={"events": [{"user_id": "old", "name": "open"}]})
    assert members(api, "inactive") == ["new"]


def test_a_number_compared_with_a_decimal_string_is_compared_as_numbers(api):
    """JsonLogic's loose comparisons convert the string: a metric of 10 equals "10" and exceeds "9.5", in the
    full evaluation of a new segment (SQL) as in the write path, and `!` of such a rule excludes it."""
    api.put("/v1/users/ann", json={"metrics": {"m": 10}})
    api.put("/v1/users/bob", json={"metrics": {"m": 11}})
    assert seg(api, "ten", {"==": [{"var": "metrics.m"}, "10"]})["size"] == 1
    assert members(api, "ten") == ["ann"]
    assert seg(api, "over", {">": [{"var": "metrics.m"}, "9.5"]})["size"] == 2
    assert seg(api, "not-ten", {"!": {"or": [{"==": [{"var": "metrics.m"}, "10"]}, {"!!": [{"var": "attributes.a"}]}]}})[
        "size"] == 1
    assert members(api, "not-ten") == ["bob"]
    api.put("/v1/users/bob", json={"metrics": {"m": 10}})  # the write path agrees
    assert members(api, "ten") == ["ann", "bob"] and members(api, "not-ten") == []
