"""A segment over paths the typed index never held: its members come at once from a direct evaluation of
the users' JSON, it says `evaluating` (with progress) while the index is filled by set-based SQL in
batches, then `current`; writes during the filling keep both the members and the index exact."""
from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import insert, text

from tidings.engine.customers import users as customers
from tidings.engine.customers.schemas import UserBatchItem
from tidings.engine.customers.tables import users
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import reading, writing
from tidings.engine.segments import backfill
from tidings.engine.segments.documents import documents, load_customers, value_rows
from tidings.engine.segments.evaluate import compile_segment, ensure_indexed, evaluate_many_full, full_members, python_member
from tidings.engine.workspaces.service import create_key
from tests.eventually import eventually
from tests.segments.test_index_paths import wide_matches_cv

# values a JSON attribute can hold, chosen at the edges of documents.classify
ODD = ["", "0", "5", "-5", "5.", ".5", "5.0", "-0", "007", "1e3", "1E-3", "1e", "1e+", "-", "--5", "5\n", "abc\n", " 5",
       "abc", "ABC", "x y", "   ", "\u3000", "\t", "inf", "INF", "Infinity", "nAn", "banana", "\u0130nf", "\u0131nf", "é",
       "日本", "%", "_", "a%b", "2024-05-01", "2024-05-01T10:00:00Z", "20240501", "2024-W18", "\uff11234-05-01",
       "12345678901234567890", "1" * 17, "0.1", "1e400", "1e-400", "9007199254740993", 'a"b', "back\\slash",
       0, 1, -1, 0.1, -2.5, 1e300, 1e-300, 5e-324, 1e-310, 2 ** 53, 2 ** 53 + 1, -(2 ** 53) - 1, 2 ** 63, True, False, None,
       [], ["a"], ["a", "5", ""], ["a", 1], [["a"]], {"x": 1}]
PATHS = ["attributes.a", "metrics.m", "attributes.q\"k", "user_id", "locale", "timezone", "attributes.none"]


def index_rows(conn, workspace_id, user_paths, ep_paths=()):
    got = Counter(tuple(r) for r in conn.execute(text(
        "SELECT user_pk, ep, path, kind, txt, num, ts FROM customer_value WHERE workspace_id = :w"), {"w": workspace_id})
        if r.path in user_paths and r.ep == 0 or r.path in ep_paths and r.ep != 0)
    pks = list(conn.execute(text("SELECT id FROM users WHERE workspace_id = :w"), {"w": workspace_id}).scalars())
    found, eps = load_customers(conn, pks)
    want = Counter((r["user_pk"], r["ep"], r["path"], r["kind"], r["txt"], r["num"], r["ts"])
                   for pk in pks for r in value_rows(workspace_id, found[pk], eps.get(pk, []), user_paths, ep_paths))
    return got, want


def test_sql_backfill_classifies_as_python(db):
    """Every value class, filled by SQL, gives the rows documents.value_rows gives (none missing or twice)."""
    workspace, _ = create_key(db, "odd")
    with writing(db) as conn:
        conn.execute(insert(users), [{"workspace_id": workspace.id, "user_id": f"u{i}", "attributes": {"a": v, 'q"k': v},
                                      "metrics": {"m": v}, "timezone": "Europe/Paris" if i % 2 else None,
                                      "locale": v if isinstance(v, str) else None, "created_at": 0, "updated_at": 0}
                                     for i, v in enumerate(ODD)])
    rule = {"or": [{"==": [{"var": p}, "x"]} for p in PATHS]}
    seg = compile_segment("odd", "dynamic", rule)
    with writing(db) as conn:
        ensure_indexed(conn, workspace.id, seg)
    with reading(db) as conn:
        got, want = index_rows(conn, workspace.id, set(PATHS))
        assert got == want, (got - want, want - got)
        assert not backfill.pending(conn, workspace.id)
    wide_matches_cv(db, workspace.id)
    # the direct evaluation (no index) and the index's agree with the reference evaluator on these values
    rules = [{"==": [{"var": "attributes.a"}, 5]}, {">": [{"var": "metrics.m"}, 0]}, {"in": ["a", {"var": "attributes.a"}]},
             {"!": {"var": "attributes.a"}}, {"<": [{"var": "locale"}, "b"]}, {"===": [{"var": "attributes.a"}, "5"]}]
    with writing(db) as conn:
        pks = list(conn.execute(text("SELECT id FROM users WHERE workspace_id = :w"), {"w": workspace.id}).scalars())
        for r in rules:
            s = compile_segment("r", "dynamic", r)
            docs = documents(conn, workspace.id, pks, s.facts, now_ms())
            expected = {pk for pk, d in docs.items() if python_member(s, d)}
            assert full_members(conn, workspace.id, s, now_ms(), register=False, direct=True) == expected, r
            assert full_members(conn, workspace.id, s, now_ms()) == expected, r


RULE = {"and": [{"==": [{"var": "attributes.plan"}, "pro"]}, {"in": ["vip", {"var": "attributes.tags"}]}]}


def member(attrs):
    return attrs.get("plan") == "pro" and "vip" in (attrs.get("tags") or [])


def people(n, start=0):
    return [{"plan": ["pro", "free", "team"][i % 3], "tags": ["vip"] if i % 2 else ["x"]} for i in range(start, start + n)]


def put_users(db, workspace, attrs_by_id):
    customers.upsert_users(db, workspace, [UserBatchItem(user_id=uid, attributes=a) for uid, a in attrs_by_id.items()])


def members(api, sid):
    out, cursor = set(), None
    while True:
        body = api.get(f"/v1/segments/{sid}/members", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}).json()
        out |= {m["user_id"] for m in body["items"]}
        cursor = body["next_cursor"]
        if not cursor:
            return out


def exact(db, workspace_id):
    """The index holds exactly the rows of the customers' current data, the wide table matches it, and a full
    evaluation from the index changes no membership."""
    with reading(db) as conn:
        got, want = index_rows(conn, workspace_id, {"attributes.plan", "attributes.tags"})
    assert got == want, (got - want, want - got)
    wide_matches_cv(db, workspace_id)
    with writing(db) as conn:
        assert evaluate_many_full(conn, workspace_id, {"vips"}) == {"vips": (0, 0)}


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(backfill, "SYNC_FILL_ROWS", 10)
    monkeypatch.setattr(backfill, "BATCH", 40)


def test_new_segment_is_evaluating_then_current_with_writes_in_between(api, db, small_batches, monkeypatch):
    monkeypatch.setattr(backfill, "IN_PROCESS", False)  # this test runs the batches itself, writes in between
    workspace, _ = create_key(db, "acme")
    data = {f"u{i}": a for i, a in enumerate(people(300))}
    put_users(db, workspace, data)
    r = api.post("/v1/segments", json={"id": "vips", "name": "VIPs", "rule": RULE})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "evaluating" and body["progress"] == 0.0
    assert body["size"] == sum(member(a) for a in data.values()) == 50
    assert members(api, "vips") == {u for u, a in data.items() if member(a)}
    seen = []
    step = 0
    while backfill.fill_step(db, workspace.id):
        step += 1
        # writes below and above the watermark, new customers, erasures: members stay exact
        changes = {f"u{(step * 37) % 300}": {"plan": "pro", "tags": ["vip"]},
                   f"u{(step * 91 + 5) % 300}": {"plan": "free"},
                   f"n{step}": {"plan": "pro", "tags": ["vip", "x"] if step % 2 else ["x"]}}
        put_users(db, workspace, changes)
        for uid, a in changes.items():
            data[uid] = {**data.get(uid, {}), **a}
        if step == 3:
            assert api.delete("/v1/users/u1").status_code == 200
            data.pop("u1")
        got = api.get("/v1/segments/vips").json()
        seen.append((got["state"], got["progress"]))
        assert members(api, "vips") == {u for u, a in data.items() if member(a)}, step
    assert step >= 7
    states = [s for s, _ in seen]
    assert states[-1] == "current" and set(states[:-1]) == {"evaluating"}
    progress = [p for _, p in seen[:-1]]
    assert progress == sorted(progress) and 0 < progress[0] < progress[-1] < 1
    assert api.get("/v1/segments/vips").json()["progress"] is None
    assert members(api, "vips") == {u for u, a in data.items() if member(a)}
    exact(db, workspace.id)


def test_concurrent_writes_during_the_backfill_are_counted_exactly(api, db, small_batches):
    """The saving process fills in its own thread while another thread keeps writing the same customers."""
    workspace, _ = create_key(db, "acme")
    data = {f"u{i}": a for i, a in enumerate(people(600))}
    put_users(db, workspace, data)
    stop = threading.Event()
    errors: list[BaseException] = []
    writes = [0]

    def writer():
        i = 0
        try:
            while not stop.is_set() or i < 40:
                uid = f"u{(i * 53) % 600}" if i % 3 else f"w{i}"
                a = {"plan": "pro" if i % 2 else "team", "tags": ["vip"] if i % 4 < 2 else []}
                put_users(db, workspace, {uid: a})
                data[uid] = a
                i += 1
                writes[0] = i
        except BaseException as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        eventually(lambda: writes[0] >= 5, 30, "the writer running")
        r = api.post("/v1/segments", json={"id": "vips", "name": "VIPs", "rule": RULE})
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "evaluating"
        at_save = writes[0]
        eventually(lambda: api.get("/v1/segments/vips").json()["state"] == "current", 120, "the backfill finishing")
        during = writes[0] - at_save
        print("writes during the backfill:", during)
        assert during > 0  # the writer kept writing while the batches ran
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors
    assert writes[0] >= 40
    assert members(api, "vips") == {u for u, a in data.items() if member(a)}
    assert api.get("/v1/segments/vips").json()["size"] == sum(member(a) for a in data.values())
    exact(db, workspace.id)
