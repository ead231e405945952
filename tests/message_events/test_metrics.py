"""Delivery and response metrics, attribution to the last message, control group and lift, funnel, CLI."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tidings.engine.ops.cli import main
from tidings.engine.messaging.ledger import message_event_happened
from tidings.engine.customers.schemas import EventIn

from .conftest import T0_MS, record_events, send_event, ws_of

H = 3600 * 1000
J = ("spring", 1, "mail-1")


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _ev(name, user, ms, **attrs) -> EventIn:
    return EventIn(name=name, user_id=user, timestamp=_at(ms), attributes=attrs)


@pytest.fixture
def seeded(api, db):
    """spring v1: mail-1 to u1,u2 (variant A) and u3,u4 (B); sms-1 to u1 an hour later; u5-u8 held out."""
    for i in range(1, 5):
        api.put(f"/v1/endpoints/u{i}-mail", json={"channel": "EMAIL", "address": f"u{i}@example.com", "user_id": f"u{i}"})
    api.put("/v1/endpoints/u1-sms", json={"channel": "SMS", "address": "+15550000001", "user_id": "u1"})
    workspace = ws_of(db)
    mail = {i: f"m{i}" for i in range(1, 5)}
    batch = [send_event(mail[i], endpoint_id=f"u{i}-mail", journey=J, variant="A" if i <= 2 else "B", ts_ms=T0_MS)
             for i in range(1, 5)]
    batch.append(send_event("s1", endpoint_id="u1-sms", channel="sms", journey=("spring", 1, "sms-1"), ts_ms=T0_MS + H))
    for i in (1, 2, 3):
        batch.append(send_event(mail[i], endpoint_id=f"u{i}-mail", journey=J, variant="A" if i <= 2 else "B",
                                ts_ms=T0_MS + 60_000, name_type="delivered"))
    batch.append(send_event("m4", endpoint_id="u4-mail", journey=J, variant="B", ts_ms=T0_MS + 60_000,
                            name_type="hard_bounce"))
    batch.append(send_event("m2", endpoint_id="u2-mail", journey=J, variant="A", ts_ms=T0_MS + 5 * 60_000,
                            name_type="unsubscribe"))
    record_events(db, workspace, batch)
    # opens and clicks count every occurrence
    from tidings.engine.messaging.ledger import Occurrence, find_messages, record_occurrences

    with db.begin() as conn:
        refs, _ = find_messages(conn, workspace.id, message_ids=["m1", "m3"])
        record_occurrences(conn, workspace.id, [
            (refs["m1"], Occurrence(type="open", ts=T0_MS + 120_000)),
            (refs["m1"], Occurrence(type="open", ts=T0_MS + 180_000)),
            (refs["m3"], Occurrence(type="open", ts=T0_MS + 120_000)),
            (refs["m1"], Occurrence(type="click", ts=T0_MS + 190_000, details={"link": "https://x.example/"})),
        ])
    record_events(db, workspace, [
        _ev("purchase", "u1", T0_MS + 2 * H),          # after sms-1: counts for sms-1
        _ev("purchase", "u3", T0_MS + 30 * 60_000),   # counts for mail-1, variant B
        _ev("purchase", "u2", T0_MS + 10 * 24 * H),   # outside the 7-day window
        _ev("purchase", "u9", T0_MS + H),             # never messaged
        *[_ev("seen", f"u{i}", T0_MS) for i in range(5, 9)],
        _ev("purchase", "u5", T0_MS + 24 * H),        # one of four held-out customers converts
    ])
    hold_out(db, workspace, "spring", 1, [f"u{i}" for i in range(5, 9)], T0_MS)
    return workspace


def hold_out(db, workspace, journey_id, version, user_ids, at_ms):
    """journey_run rows as the runtime's holdout step leaves them (status held_out, the step's time)."""
    from sqlalchemy import select

    from tidings.engine.platform.db import bulk_insert
    from tidings.engine.journeys.tables import journey_runs
    from tidings.engine.customers.tables import users

    with db.begin() as conn:
        pks = dict(conn.execute(select(users.c.user_id, users.c.id).where(users.c.workspace_id == workspace.id)).all())
        bulk_insert(conn, journey_runs, [
            {"workspace_id": workspace.id, "journey_id": journey_id, "version": version, "user_pk": pks[u], "cohort": 1,
             "workflow_id": f"journey/{workspace.id}/{journey_id}/v{version}/cohort/1", "current_step": "hold",
             "status": "held_out", "exit_reason": "control group", "entered_at": at_ms - 1000,
             "updated_at": at_ms + 5000, "converted_at": None, "steps": [{"step": "hold", "hop": 0, "at": at_ms}],
             "variant": None, "entry": {}} for u in user_ids])


def test_journey_metrics(api, seeded):
    r = api.get("/v1/journeys/spring/metrics", params={"goal": "purchase", "within": "7d"})
    assert r.status_code == 200, r.text
    m = r.json()
    t = m["totals"]["metrics"]
    assert t["sent"] == {"total": 5, "customers": 4, "messages": 5}
    assert t["delivered"]["total"] == 3 and t["bounced"]["total"] == 1 and t["failed"]["total"] == 0
    assert t["opened"] == {"total": 3, "customers": 2, "messages": 2}
    assert t["clicked"] == {"total": 1, "customers": 1, "messages": 1}
    assert t["unsubscribed"]["customers"] == 1
    assert t["converted"]["total"] == 2 and t["converted"]["customers"] == 2
    rates = m["totals"]["rates"]
    assert rates["delivery"] == 0.6 and rates["open"] == round(2 / 3, 4) and rates["click"] == round(1 / 3, 4)
    assert rates["click_to_open"] == 0.5 and rates["bounce"] == 0.2 and rates["conversion"] == 0.5

    steps = {s["step_id"]: s["metrics"] for s in m["steps"]}
    assert [s["step_id"] for s in m["steps"]] == ["mail-1", "sms-1"]
    assert steps["mail-1"]["sent"]["total"] == 4 and steps["mail-1"]["converted"]["customers"] == 1
    assert steps["sms-1"]["sent"]["total"] == 1 and steps["sms-1"]["converted"]["customers"] == 1
    variants = {v["variant"]: v["metrics"] for v in m["variants"]}
    assert variants["A"]["sent"]["total"] == 2 and variants["A"]["converted"]["total"] == 0
    assert variants["B"]["converted"]["total"] == 1 and variants["B"]["opened"]["customers"] == 1
    channels = {c["channel"]: c["metrics"] for c in m["channels"]}
    assert channels["email"]["sent"]["total"] == 4 and channels["sms"]["converted"]["total"] == 1

    assert m["control"] == {"customers": 4, "converted": 1, "rate": 0.25}
    assert m["treatment_rate"] == 0.5 and m["lift"] == 1.0
    assert m["goal"] == {"event": "purchase", "within_seconds": 7 * 86400, "filter": None}


def test_a_deleted_customers_messages_leave_the_metrics(api, seeded):
    """The metrics count message_fact rows kept by triggers on the events: deleting a customer (and so
    their events) takes their messages out of the journey's and the workspace's counts at once."""
    assert api.delete("/v1/users/u1").status_code in (200, 204)
    t = api.get("/v1/journeys/spring/metrics").json()["totals"]["metrics"]
    assert t["sent"] == {"total": 3, "customers": 3, "messages": 3}  # u1's mail-1 and sms-1 are gone
    assert t["opened"] == {"total": 1, "customers": 1, "messages": 1}  # u3's open; u1's two went with u1
    assert t["clicked"]["total"] == 0
    channels = {c["channel"]: c["metrics"] for c in api.get("/v1/metrics/messages").json()["channels"]}
    assert "sms" not in channels or channels["sms"]["sent"]["total"] == 0
    assert channels["email"]["sent"] == {"total": 3, "customers": 3, "messages": 3}


def test_window_version_and_time_filters(api, seeded):
    short = api.get("/v1/journeys/spring/metrics", params={"goal": "purchase", "within": "45m"}).json()
    assert short["totals"]["metrics"]["converted"]["customers"] == 1  # u3 only: u1 bought 1 h after sms-1
    assert api.get("/v1/journeys/spring/metrics", params={"version": 2}).json()["totals"]["metrics"]["sent"]["total"] == 0
    late = api.get("/v1/journeys/spring/metrics", params={"since": "2026-03-02T09:30:00Z"}).json()
    assert late["totals"]["metrics"]["sent"]["total"] == 1  # only sms-1
    no_goal = api.get("/v1/journeys/spring/metrics").json()
    assert no_goal["goal"] is None and no_goal["lift"] is None
    assert no_goal["totals"]["metrics"]["converted"]["total"] == 0
    assert api.get("/v1/journeys/spring/metrics", params={"within": "soon"}).status_code == 400
    assert api.get("/v1/journeys/spring/metrics", params={"since": "yesterday"}).status_code == 400


SPRING = """apiVersion: tidings/v1
kind: Journey
id: spring
entry: {event: e}
settings: {goal: {event: purchase, within: 7d}}
steps:
  - {id: hold, holdout: {percent: 10}}
  - {id: mail-1, send: {channel: EMAIL, template: t}}
"""


def test_goal_comes_from_the_journey_and_control_from_its_runs(api, db, seeded):
    from tidings.engine.journeys import store
    from tidings.engine.journeys.testing import AnyCatalog

    store.put_journey(db, seeded, SPRING, AnyCatalog())
    m = api.get("/v1/journeys/spring/metrics").json()  # no goal named: the journey's own
    assert m["goal"] == {"event": "purchase", "within_seconds": 7 * 86400, "filter": None}
    assert m["control"] == {"customers": 4, "converted": 1, "rate": 0.25} and m["lift"] == 1.0
    other = api.get("/v1/journeys/spring/metrics", params={"goal": "signup"}).json()  # named: that one
    assert other["goal"]["event"] == "signup" and other["control"]["converted"] == 0
    store.put_journey(db, seeded, SPRING.replace("within: 7d", "within: 1h"), AnyCatalog())
    assert api.get("/v1/journeys/spring/metrics").json()["control"]["converted"] == 0  # u5 bought after 24 h
    assert api.get("/v1/journeys/spring/metrics", params={"version": 1}).json()["control"]["converted"] == 1
    # a run that ended otherwise is not in the control group; nor are other versions' when one is asked
    hold_out(db, seeded, "spring", 2, ["u9"], T0_MS)
    assert api.get("/v1/journeys/spring/metrics", params={"version": 1}).json()["control"]["customers"] == 4
    assert api.get("/v1/journeys/spring/metrics").json()["control"]["customers"] == 5


def test_message_metrics_and_transactional_goal(api, db, seeded):
    record_events(db, seeded, [
        send_event("t1", endpoint_id="u1-mail", transactional=True, goal={"event": "signup", "within_seconds": 3600},
                   ts_ms=T0_MS + 3 * H),
        _ev("signup", "u1", T0_MS + 3 * H + 600_000),
    ])
    m = api.get("/v1/metrics/messages").json()
    assert m["totals"]["metrics"]["sent"]["total"] == 6
    assert m["transactional"]["metrics"]["sent"]["total"] == 1
    assert m["transactional"]["metrics"]["converted"]["customers"] == 1
    assert m["journeys"]["metrics"]["sent"]["total"] == 5
    assert {c["channel"]: c["metrics"]["sent"]["total"] for c in m["channels"]} == {"email": 5, "sms": 1}
    sms = api.get("/v1/metrics/messages", params={"channel": "SMS"}).json()
    assert sms["totals"]["metrics"]["sent"]["total"] == 1
    window = api.get("/v1/metrics/messages", params={"since": "2026-03-02T09:30:00Z",
                                                      "until": "2026-03-02T11:00:00Z"}).json()
    assert window["totals"]["metrics"]["sent"]["total"] == 1
    assert api.get("/v1/metrics/messages", params={"channel": "pigeon"}).status_code == 400


def test_metrics_are_per_workspace(other_api, seeded):
    m = other_api.get("/v1/journeys/spring/metrics", params={"goal": "purchase"}).json()
    assert m["totals"]["metrics"]["sent"]["total"] == 0 and m["steps"] == []
    assert other_api.get("/v1/metrics/messages").json()["totals"]["metrics"]["sent"]["total"] == 0


def test_funnel_page(api, seeded):
    r = api.get("/v1/journeys/spring/funnel", params={"goal": "purchase"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.count("<svg") == 2 and "Step mail-1" in page and "Step sms-1" in page
    assert "lift +100.0%" in page and "<title>opened: 2 customers</title>" in page


def test_journey_steps_read_message_events(db, seeded):
    from tidings.engine.platform.db import reading
    from tidings.engine.customers.tables import users
    from sqlalchemy import select

    with reading(db) as conn:
        pk = {r.user_id: r.id for r in conn.execute(select(users.c.user_id, users.c.id))}

        def happened(user, step, type_, since=0):
            return message_event_happened(conn, seeded.id, pk[user], journey_id="spring", step_id=step, type=type_,
                                          since_ms=since)

        assert happened("u1", "mail-1", "opened") and happened("u1", "mail-1", "clicked")
        assert not happened("u2", "mail-1", "opened") and happened("u2", "mail-1", "unsubscribed")
        assert happened("u4", "mail-1", "bounced") and not happened("u4", "mail-1", "delivered")
        assert not happened("u1", "sms-1", "opened") and happened("u1", "sms-1", "sent")
        assert not happened("u1", "mail-1", "opened", since=T0_MS + H)
        with pytest.raises(ValueError):
            happened("u1", "mail-1", "exploded")


def test_cli_stats_table(seeded, settings, monkeypatch, capsys):
    monkeypatch.setenv("TIDINGS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TIDINGS_HOME", str(settings.home))
    assert main(["journeys", "stats", "spring", "--workspace", "acme", "--goal", "purchase"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "SENT" in lines[2] and "CONVERTED" in lines[2]
    step = next(x for x in lines if x.startswith("step mail-1"))
    assert step.split()[2:6] == ["4", "3", "0", "1"]
    assert any(x.startswith("total") for x in lines)
    assert "control group: 4 customers, 1 converted (25.0%); treatment 50.0%; lift +100.0%" in out
    assert main(["journeys", "stats", "spring", "--workspace", "nobody"]) == 2
