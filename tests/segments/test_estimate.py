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
