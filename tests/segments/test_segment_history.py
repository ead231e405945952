"""Segment events of batch writes (stored one row per customer and write, engine/customers/history.py) read
back as one `_segment.enter` / `_segment.exit` event per change everywhere: the events API with its
filters and cursors, stream positions, segment-entry journeys, and rules over segment events."""
from __future__ import annotations

from sqlalchemy import insert, select

from tidings.engine.journeys.tables import journey_entries, journey_triggers
from tidings.engine.analytics.streams import read_events
from tidings.engine.workspaces.service import ensure_workspace


def seg(api, id, rule):
    r = api.post("/v1/segments", json={"id": id, "name": id, "rule": rule})
    assert r.status_code == 201, r.text
    return r.json()


def batch(api, items):
    r = api.post("/v1/users/batch", json={"items": items})
    assert r.status_code < 300, r.text


def all_events(api, **params):
    items, cursor = [], None
    while True:
        body = api.get("/v1/events", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def changes(items):
    return [(e["user_id"], e["name"], e["attributes"]["segment_id"]) for e in items if e["name"].startswith("_segment.")]


def four_segments(api):
    seg(api, "a", {"==": [{"var": "attributes.plan"}, "pro"]})
    seg(api, "b", {">": [{"var": "attributes.n"}, 1]})
    seg(api, "c", {">": [{"var": "attributes.n"}, 5]})
    seg(api, "d", {"and": [{"in_segment": "a"}, {"in_segment": "b"}]})


ENTERED = [("u0", "_segment.enter", "a"),
           ("u1", "_segment.enter", "a"), ("u1", "_segment.enter", "b"), ("u1", "_segment.enter", "d"),
           ("u2", "_segment.enter", "a"), ("u2", "_segment.enter", "b"), ("u2", "_segment.enter", "c"),
           ("u2", "_segment.enter", "d"),
           ("u3", "_segment.enter", "b"), ("u3", "_segment.enter", "c")]


def write_four(api):
    batch(api, [{"user_id": "u0", "attributes": {"plan": "pro", "n": 0}},
                {"user_id": "u1", "attributes": {"plan": "pro", "n": 3}},
                {"user_id": "u2", "attributes": {"plan": "pro", "n": 9}},
                {"user_id": "u3", "attributes": {"plan": "free", "n": 9}}])


def test_batch_write_events_read_one_per_change_with_filters_and_cursors(api):
    four_segments(api)
    write_four(api)
    full = api.get("/v1/events", params={"limit": 1000}).json()
    assert full["next_cursor"] is None
    # every customer's changes in dependency order of the segments, customers in the order written
    assert changes(full["items"]) == ENTERED
    assert len({e["id"] for e in full["items"]}) == len(full["items"])
    assert {e["timestamp"] for e in full["items"]} == {full["items"][0]["timestamp"]}
    assert all(e["metrics"] == {} and e["endpoint_id"] is None for e in full["items"])
    for limit in (1, 2, 3, 7):  # pages cut inside one customer's changes continue where they stopped
        paged = all_events(api, limit=limit)
        assert [e["id"] for e in paged] == [e["id"] for e in full["items"]]
    assert changes(all_events(api, user_id="u2", name="_segment.enter", limit=3)) == ENTERED[4:8]
    assert all_events(api, name="_segment.exit") == []
    assert api.get("/v1/users/u2").json()["segments"] == ["a", "b", "c", "d"]

    # u2 leaves three segments in one write, u3 enters one: exits read back the same way
    batch(api, [{"user_id": "u2", "attributes": {"n": 0}}, {"user_id": "u3", "attributes": {"plan": "pro"}}])
    later = changes(all_events(api, limit=2))[len(ENTERED):]
    assert later == [("u2", "_segment.exit", "b"), ("u2", "_segment.exit", "c"), ("u2", "_segment.exit", "d"),
                     ("u3", "_segment.enter", "a"), ("u3", "_segment.enter", "d")]
    assert changes(all_events(api, name="_segment.exit", limit=2)) == later[:3]
    assert api.get("/v1/users/u2").json()["segments"] == ["a"]
    assert api.get("/v1/users/u3").json()["segments"] == ["a", "b", "c", "d"]

    # erasing a customer erases their history
    assert api.delete("/v1/users/u1").status_code in (200, 204)
    assert [u for u, _, _ in changes(all_events(api, limit=4))].count("u1") == 0


def test_stream_positions_are_one_per_event_and_resume_anywhere(api, db):
    four_segments(api)
    api.post("/v1/events", json={"events": [{"user_id": "z", "name": "view"}]})
    write_four(api)
    api.post("/v1/events", json={"events": [{"user_id": "z", "name": "click"}]})
    workspace = ensure_workspace(db, "acme")
    every = read_events(db, workspace.id, 0, 1000)
    names = [(r.user_id, r.name, (r.attributes or {}).get("segment_id")) for r in every]
    assert names[0] == ("z", "view", None) and names[-1] == ("z", "click", None)
    assert names[1:-1] == ENTERED
    positions = [r.id for r in every]
    assert positions == sorted(set(positions))
    for i, after in enumerate([0] + positions):  # resuming after any position, with any batch size
        for limit in (1, 3, 1000):
            assert [r.id for r in read_events(db, workspace.id, after, limit)] == positions[i:i + limit]
            assert [r.event_id for r in read_events(db, workspace.id, after, limit)] == [r.event_id for r in every[i:i + limit]]
    # what GET /v1/events returns, in the same order
    assert [r.event_id for r in every] == [e["id"] for e in all_events(api, limit=1000)]


def test_segment_entry_journey_admits_each_customer_entering_in_a_batch(api, db):
    four_segments(api)
    workspace = ensure_workspace(db, "acme")
    with db.begin() as conn:  # what activating a journey with `entry: {segment: b}` writes
        conn.execute(insert(journey_triggers).values(workspace_id=workspace.id, event_name="_segment.enter",
                                                     journey_id="welcome-b", role="entry", segment_id="b"))
    write_four(api)
    with db.connect() as conn:
        queued = conn.execute(select(journey_entries.c.journey_id, journey_entries.c.event)
                              .order_by(journey_entries.c.id)).all()
    enters_b = [e for e in all_events(api, name="_segment.enter") if e["attributes"]["segment_id"] == "b"]
    assert [e["user_id"] for e in enters_b] == ["u1", "u2", "u3"]
    assert {j for j, _ in queued} == {"welcome-b"}
    assert [ev["id"] for _, ev in queued] == [e["id"] for e in enters_b]
    assert all(ev["name"] == "_segment.enter" and ev["attributes"] == {"segment_id": "b"} for _, ev in queued)


def test_rules_over_segment_events_count_each_change(api):
    four_segments(api)
    write_four(api)
    # full evaluation: SQL leaves segment events to Python, which reads the stored rows expanded
    assert seg(api, "entered-b", {"performed": {"event": "_segment.enter", "where": {"segment_id": "b"}}})["size"] == 3
    assert seg(api, "entered-3", {"performed": {"event": "_segment.enter", "count": [">=", 3]}})["size"] == 2
    assert seg(api, "recent-enter", {"last_performed": {"event": "_segment.enter", "within": "1d"}})["size"] == 4
    assert seg(api, "left", {"performed": {"event": "_segment.exit"}})["size"] == 0
    # a customer's write re-checks them with the per-write evaluator, over the same expanded events
    batch(api, [{"user_id": "u4", "attributes": {"plan": "pro", "n": 9}}])
    members = api.get("/v1/segments/entered-3/members", params={"limit": 100}).json()["items"]
    assert sorted(m["user_id"] for m in members) == ["u1", "u2"]
    batch(api, [{"user_id": "u2", "attributes": {"n": 0}}])
    assert api.get("/v1/segments/left").json()["size"] == 0  # segment events do not re-trigger segments
    r = api.put("/v1/endpoints/u2-mail", json={"channel": "EMAIL", "address": "u2@example.com", "user_id": "u2"})
    assert r.status_code < 300, r.text  # an endpoint write re-checks every segment of its customer
    assert "left" in api.get("/v1/users/u2").json()["segments"]
