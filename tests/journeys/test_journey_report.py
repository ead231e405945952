"""The journey report after a real run (time-skipping server, the real send path into the outbox): the funnel,
counts per step, channel and variant, the holdout's share and lift, why customers were not sent to and why
entries were refused; and GET /v1/journeys/{id}/report answers the same."""
from __future__ import annotations

from collections import Counter

import msgspec
import pytest

from tidings.engine.analytics.journey_report import journey_report
from tidings.engine.journeys.testing import JourneyTest
from tidings.engine.platform.errors import NotFound
from tidings.engine.workspaces.service import WorkspaceRef, create_key

REPORT = """apiVersion: tidings/v1
kind: Journey
id: report
name: Report
entry: {event: signed_up}
settings:
  goal: {event: purchased, within: 7d}
  frequency_cap: {messages: 1, per: 1d}
  entry: {max_entries: 1}
start: control
steps:
  - {id: control, holdout: {percent: 30}}
  - id: ab
    random_split:
      branches:
        - {weight: 50, variant: A, next: mail-a}
        - {weight: 50, variant: B, next: mail-b}
  - {id: mail-a, send: {channel: EMAIL, template: t}, next: sms}
  - {id: mail-b, send: {channel: EMAIL, template: t}, next: sms}
  - {id: sms, send: {channel: SMS, template: s}}
"""


def _round(x: float) -> float:
    return round(x, 4)


@pytest.fixture
async def journey_test(journey_env, client):
    """The harness on the API's database: SQLite, and PostgreSQL when TIDINGS_TEST_POSTGRES_URL is set."""
    async with JourneyTest(journey_env, client.app.state.db) as jt:
        yield jt


async def test_report_after_a_run(journey_test, client):
    jt = journey_test
    jt.template("t", subject="Hi {{ user.user_id }}", text="Hello")
    jt.template("s", channel="SMS", body="Hello")
    await jt.put(REPORT)
    plain = [jt.customer(f"u{i:02}") for i in range(20)]
    opted = [jt.customer(f"out{i}", opt_out=True) for i in range(2)]
    bare = [jt.customer(f"bare{i}", email=None) for i in range(2)]
    everyone = plain + opted + bare
    # one customer twice in the same entry: the second is refused, the customer is already entering
    await jt.run("report", everyone + [plain[0]], entry={"name": "signed_up"})

    runs = jt.runs("report")
    assert len(runs) == len(everyone)
    held = {u for u, r in runs.items() if r.status == "held_out"}
    treated = [u for u in runs if u not in held]
    assert held and treated  # 30% of 24 by hash: some of each
    sends = jt.sends("report")
    mailed = {u for u, step, _ in sends if step in ("mail-a", "mail-b")}
    assert mailed == {u for u in treated if u.startswith("u")}
    variants = Counter(v for _, step, v in sends if step in ("mail-a", "mail-b"))

    # conversions: three customers mailed and two held out buy within the goal's window
    buyers = sorted(mailed)[:3] + sorted(held)[:2]
    for u in buyers:
        jt.event(u, "purchased")
    # customers seen before: refused by the entry limit
    await jt.run("report", [plain[1], plain[2]], entry={"name": "signed_up"})

    r = journey_report(jt.db, jt.workspace, "report")
    assert (r.entered, r.held_out, r.completed) == (len(everyone), len(held), len(treated))
    assert r.goal is not None and (r.goal.event, r.goal.within_seconds) == ("purchased", 7 * 86400)

    # funnel: entered, sent per send step (in the journey's order), goal reached
    assert [(f.stage, f.step_id, f.customers) for f in r.funnel] == [
        ("entered", None, len(everyone)), ("sent", "mail-a", variants["A"]), ("sent", "mail-b", variants["B"]),
        ("sent", "sms", 0), ("goal", None, 3)]
    assert r.funnel[1].share == _round(variants["A"] / len(everyone))

    steps = {s.step_id: s for s in r.steps}
    assert [s.step_id for s in r.steps] == ["control", "ab", "mail-a", "mail-b", "sms", "end"]  # end: implicit exit
    assert steps["control"].entered == len(everyone) and steps["control"].ended == len(held)
    assert steps["ab"].entered == len(treated) and steps["control"].kind == "holdout"
    treated_opted = [u for u in treated if u.startswith("out")]
    treated_bare = [u for u in treated if u.startswith("bare")]
    a_and_b = Counter()
    for s in ("mail-a", "mail-b"):
        a_and_b.update(steps[s].not_sent)
        assert steps[s].messages is not None and steps[s].messages.sent == steps[s].sent
    assert a_and_b == Counter({"opted_out": len(treated_opted), "no_endpoint": len(treated_bare)})
    # the SMS step: those mailed are at the daily cap; the others have no phone
    assert steps["sms"].sent == 0 and steps["sms"].entered == len(treated)
    assert steps["sms"].not_sent == {k: v for k, v in (("frequency_cap", len(mailed)),
                                                       ("no_endpoint", len(treated) - len(mailed))) if v}
    assert r.not_sent == {k: v for k, v in (("frequency_cap", len(mailed)), ("opted_out", len(treated_opted)),
                                            ("no_endpoint", len(treated_bare) + len(treated) - len(mailed))) if v}
    assert r.refused_at_admission == {"already_in_journey": 1, "entry_limit": 2}

    # per variant and channel: the messages the outbox received, and the conversions they earned
    by_variant = {g.name: g.messages for g in r.variants}
    assert {k: v.sent for k, v in by_variant.items()} == dict(variants)
    assert sum(v.converted for v in by_variant.values()) == 3
    channels = {m["channel"] for m in jt.messages("report")}
    assert [g.name for g in r.channels] == sorted(channels)
    assert sum(g.messages.sent for g in r.channels) == len(sends)

    # the holdout: its share of the entries, its conversion against the treated customers', the lift
    h = r.holdout
    assert (h.customers, h.rate) == (len(held), _round(len(held) / len(everyone)))
    assert (h.treated, h.treated_converted, h.converted) == (len(mailed), 3, 2)
    control, treatment = _round(2 / len(held)), _round(3 / len(mailed))
    assert (h.conversion_rate, h.treated_conversion_rate) == (control, treatment)
    assert h.lift == _round((treatment - control) / control)

    with pytest.raises(NotFound):
        journey_report(jt.db, jt.workspace, "no-such-journey")
    with pytest.raises(NotFound):  # another workspace's journey is not found either
        journey_report(jt.db, WorkspaceRef(id=jt.workspace.id + 1000, name="other"), "report")

    # the API answers the same report, for this workspace's key only
    _, key = create_key(jt.db, jt.workspace.name)
    answer = client.get("/v1/journeys/report/report", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and answer.json() == msgspec.to_builtins(r)
    _, other = create_key(jt.db, "globex")
    missing = client.get("/v1/journeys/report/report", headers={"Authorization": f"Bearer {other}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    schema = client.get("/schema/openapi.json").json()
    operation = schema["paths"]["/v1/journeys/{journey_id}/report"]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/JourneyReport") and "funnel" in schema["components"]["schemas"]["JourneyReport"]["properties"]
