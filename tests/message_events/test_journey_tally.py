"""The journey's message tally (journey_message_tally, kept by triggers on message_fact): the unwindowed
report reads its counts from it, and they stay those of the message events as events come and go."""
from __future__ import annotations

from sqlalchemy import func, select

from tidings.engine.analytics import metrics as mx
from tidings.engine.analytics.tables import journey_message_tallies as tally

from .test_metrics import seeded  # noqa: F401  (the fixture: journey spring, two steps, variants A/B)

JOURNEY = 1  # grouped_by: the whole journey


def _tallied(db, workspace, metric: str) -> dict[str, int]:
    with db.connect() as conn:
        row = conn.execute(select(func.sum(tally.c.events), func.sum(tally.c.customers), func.sum(tally.c.messages))
                           .where(tally.c.workspace_id == workspace.id, tally.c.journey_id == "spring",
                                  tally.c.grouped_by == JOURNEY, tally.c.metric == metric)).one()
    return {"total": int(row[0] or 0), "customers": int(row[1] or 0), "messages": int(row[2] or 0)}


def _counted(db, workspace, **kwargs) -> dict:
    """journey_metrics counted from the facts (a time bound takes the COUNT(DISTINCT) path), by step."""
    m = mx.journey_metrics(db, workspace, "spring", since_ms=-(2 ** 62), **kwargs)
    m["steps"] = sorted(m["steps"], key=lambda s: s["step_id"])
    return m


def _from_tally(db, workspace, **kwargs) -> dict:
    m = mx.journey_metrics(db, workspace, "spring", exact_step_order=False, **kwargs)
    m["steps"] = sorted(m["steps"], key=lambda s: s["step_id"])
    return m


def test_the_tally_counts_what_was_written_and_deleted(api, db, seeded):  # noqa: F811
    workspace = seeded
    assert _tallied(db, workspace, "sent") == {"total": 5, "customers": 4, "messages": 5}
    assert _tallied(db, workspace, "opened") == {"total": 3, "customers": 2, "messages": 2}  # m1 opened twice
    assert _from_tally(db, workspace, goal="purchase") == _counted(db, workspace, goal="purchase")

    # u1 (mail-1 and sms-1, the two opens and the click of m1) goes, and with them the journey's first event
    assert api.delete("/v1/users/u1").status_code in (200, 204)
    assert _tallied(db, workspace, "sent") == {"total": 3, "customers": 3, "messages": 3}
    assert _tallied(db, workspace, "opened") == {"total": 1, "customers": 1, "messages": 1}
    assert _tallied(db, workspace, "clicked") == {"total": 0, "customers": 0, "messages": 0}
    assert _from_tally(db, workspace, goal="purchase") == _counted(db, workspace, goal="purchase")
    # the API's metrics keep the steps in the order of their first event: read from the facts once a
    # group's first event may have been deleted; the report orders steps by the journey's graph instead
    assert mx.journey_metrics(db, workspace, "spring")["steps"] == _counted(db, workspace)["steps"]


def test_a_customer_sent_twice_is_one_customer_until_both_sends_are_gone(api, db, seeded):  # noqa: F811
    workspace = seeded
    from sqlalchemy import delete

    from tidings.engine.customers.tables import events

    from .conftest import T0_MS, record_events, send_event

    record_events(db, workspace, [send_event("m1b", endpoint_id="u1-mail", journey=("spring", 1, "mail-1"),
                                             variant="A", ts_ms=T0_MS + 7_200_000)])
    assert _tallied(db, workspace, "sent") == {"total": 6, "customers": 4, "messages": 6}
    steps = {s["step_id"]: s["metrics"] for s in _from_tally(db, workspace)["steps"]}
    assert steps["mail-1"]["sent"] == {"total": 5, "customers": 4, "messages": 5}
    assert _from_tally(db, workspace) == _counted(db, workspace)

    # retention (or any bulk SQL) deletes one of u1's two sends: u1 is still a customer sent to
    with db.begin() as conn:
        conn.execute(delete(events).where(events.c.workspace_id == workspace.id, events.c.event_id == "m1b:send"))
    assert _tallied(db, workspace, "sent") == {"total": 5, "customers": 4, "messages": 5}
    with db.begin() as conn:
        conn.execute(delete(events).where(events.c.workspace_id == workspace.id, events.c.event_id == "m1:send"))
    # u1's sms-1 send remains: still a customer of the journey, no longer of mail-1
    assert _tallied(db, workspace, "sent") == {"total": 4, "customers": 4, "messages": 4}
    steps = {s["step_id"]: s["metrics"] for s in _from_tally(db, workspace)["steps"]}
    assert steps["mail-1"]["sent"] == {"total": 3, "customers": 3, "messages": 3}
    assert _from_tally(db, workspace) == _counted(db, workspace)
