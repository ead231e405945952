"""The segment builder's live size: exact up to the threshold, above it an estimate from a sample whose 95%
interval holds the true size, marked as an estimate in the console; the saved segment's size stays exact.
The threshold is a setting (TIDINGS_SEGMENT_ESTIMATE_ABOVE), so a few thousand customers cross it."""
from __future__ import annotations

import json

import pytest
from litestar.testing import TestClient

from tidings.api.app import create_app
from tidings.engine.customers.schemas import UserBatchItem
from tidings.engine.customers.users import upsert_users
from tidings.engine.platform.config import Settings
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.segments.estimate import estimate_rule, wilson
from tidings.engine.workspaces.service import create_key
from tests.console.test_console_session import _sign_in

N = 3_000
RULE = {"and": [{"==": [{"var": "attributes.plan"}, "pro"]}, {">": [{"var": "metrics.spend"}, 49]}]}


def _customers() -> list[UserBatchItem]:
    return [UserBatchItem(user_id=f"c{i:05}", attributes={"plan": "pro" if i % 10 < 3 else "free"},
                          metrics={"spend": (i * 7) % 100}) for i in range(N)]


def _truth() -> int:
    return sum(1 for u in _customers() if u.attributes["plan"] == "pro" and u.metrics["spend"] > 49)


@pytest.fixture
def seeded(settings):
    """An app whose builder estimates above 1,000 customers, and a workspace of 3,000."""
    with TestClient(create_app(Settings.from_env(TIDINGS_HOME=str(settings.home),
                                                 TIDINGS_DATABASE_URL=settings.database_url,
                                                 TIDINGS_SEGMENT_ESTIMATE_ABOVE="1000"))) as client:
        db = client.app.state.db
        workspace, key = create_key(db, "acme")
        upsert_users(db, workspace, _customers())
        yield client, db, workspace, key


def test_exact_below_the_threshold_estimated_above(seeded):
    _, db, workspace, _ = seeded
    truth = _truth()
    exact = estimate_rule(db, workspace, RULE, exact_up_to=N)
    assert (exact.exact, exact.size, exact.low, exact.high, exact.customers, exact.evaluated) == (
        True, truth, truth, truth, N, N)
    assert len(exact.sample) == 10 and all(u.startswith("c") for u in exact.sample)

    guess = estimate_rule(db, workspace, RULE, exact_up_to=N - 1, sample_size=600)
    assert not guess.exact and guess.customers == N
    assert 400 <= guess.evaluated <= 800  # a Bernoulli sample of about 600
    assert guess.low <= truth <= guess.high and guess.low <= guess.size <= guess.high
    assert guess.high - guess.low < N * 0.15  # an error bar, not "somewhere between 0 and everyone"
    assert estimate_rule(db, workspace, RULE, exact_up_to=N - 1, sample_size=600) == guess  # steady while typing
    with pytest.raises(InvalidInput) as bad:
        estimate_rule(db, workspace, {"==": [{"var": "attributes.plan"}]}, exact_up_to=10)
    assert bad.value.field == "rule"


def test_wilson_interval_bounds():
    assert wilson(0, 100, 10_000)[0] == 0 and wilson(100, 100, 10_000)[1] == 10_000
    low, high = wilson(50, 100, 10_000)
    assert 3_900 < low < 4_100 and 5_900 < high < 6_100
    assert wilson(30, 100, 100) == (30, 30)  # the whole population sampled: no uncertainty left


def test_console_builder_marks_the_estimate_and_the_saved_segment_is_exact(seeded):
    client, _, _, key = seeded
    token = _sign_in(client, key)
    answer = client.post("/console/segments/preview", data={"rule": json.dumps(RULE), "_csrf_token": token})
    assert answer.status_code == 200 and 'data-state="estimate"' in answer.text
    assert "estimate: 95% between" in answer.text and "of the 3,000 customers" in answer.text
    saved = client.post("/console/segments", data={"segment_id": "rich-pros", "name": "Rich pros",
                                                   "rule": json.dumps(RULE), "_csrf_token": token})
    assert saved.status_code == 200  # the segment's page, after the redirect
    got = client.get("/v1/segments/rich-pros", headers={"Authorization": f"Bearer {key}"}).json()
    assert got["size"] == _truth()


def test_console_builder_is_exact_at_or_below_the_threshold(settings):
    with TestClient(create_app(settings)) as client:  # the default threshold, 200,000
        db = client.app.state.db
        workspace, key = create_key(db, "acme")
        upsert_users(db, workspace, _customers()[:500])
        token = _sign_in(client, key)
        answer = client.post("/console/segments/preview", data={"rule": json.dumps(RULE),
                                                                "_csrf_token": token})
        truth = sum(1 for u in _customers()[:500] if u.attributes["plan"] == "pro" and u.metrics["spend"] > 49)
        assert 'data-state="size"' in answer.text and f'<strong id="preview-size">{truth}</strong>' in answer.text


def test_an_estimate_counts_the_sampled_customers_the_evaluator_would(db):
    """The sample is evaluated in SQL (the direct evaluation, kept to the sampled pks) with Python for what SQL
    leaves unsure: the same hits as evaluating each sampled customer's document, odd values included."""
    from sqlalchemy import insert, text

    from tidings.engine.customers.tables import users
    from tidings.engine.platform.clock import now_ms
    from tidings.engine.platform.db import writing
    from tidings.engine.segments.documents import documents
    from tidings.engine.segments.estimate import HASH_MULTIPLIER, HASH_RANGE
    from tidings.engine.segments.evaluate import compile_segment, python_member
    from tests.segments.test_backfill import ODD

    workspace, _ = create_key(db, "odd")
    # (not 1e300 as a metric: PostgreSQL's jsonb gives it back as a 301-digit integer, which the Python
    # evaluator cannot take, so it leaves out the whole customer where SQL, reading other paths, does not)
    metrics = [v for v in ODD if not (isinstance(v, float) and abs(v) >= 1e300)]
    with writing(db) as conn:
        conn.execute(insert(users), [{"workspace_id": workspace.id, "user_id": f"u{i}", "created_at": 0, "updated_at": 0,
                                      "attributes": {"a": v}, "metrics": {"m": metrics[(i * 7) % len(metrics)]}}
                                     for i, v in enumerate(ODD * 20)])
    total = len(ODD) * 20
    for rule in [{"and": [{">": [{"var": "metrics.m"}, 0]}, {"!=": [{"var": "attributes.a"}, "abc"]}]},
                 {"in": ["a", {"var": "attributes.a"}]}, {"==": [{"var": "attributes.a"}, "1" * 17]}]:
        guess = estimate_rule(db, workspace, rule, exact_up_to=0, sample_size=300)
        with db.connect() as conn:
            below = -(-HASH_RANGE * 300 // total)
            pks = list(conn.execute(text(f"SELECT id FROM users WHERE workspace_id = :w AND (id * {HASH_MULTIPLIER}) "
                                         f"% {HASH_RANGE} < :below"), {"w": workspace.id, "below": below}).scalars())
            seg = compile_segment("x", "dynamic", rule)
            hits = sum(1 for d in documents(conn, workspace.id, pks, seg.facts, now_ms()).values() if python_member(seg, d))
        assert not guess.exact and guess.evaluated == len(pks) and 0 < len(pks) < total
        assert guess.size == round(total * hits / len(pks)), rule
