"""The metrics' counts (events, distinct customers, distinct messages) against the same counts taken by hand
from the events themselves, for every grouping, version and date range, after events are deleted the way
retention prunes them, and after the migration that keys messages by integer fills a database written
before it (migration 0021_tally_message_keys)."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

import msgspec
import pytest
from sqlalchemy import delete, select

from tidings.engine.analytics.metrics import METRICS, journey_metrics, message_metrics
from tidings.engine.analytics.tables import message_keys
from tidings.engine.customers.schemas import EventIn
from tidings.engine.customers.tables import events
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.workspaces.service import delete_workspace, ensure_workspace

from .conftest import T0_MS, record_events, send_event

MIN, DAY = 60_000, 24 * 3600 * 1000
METRIC_OF = {t: m for m, ts in METRICS.items() for t in ts}


def _events() -> list[EventIn]:
    """Two versions of journey `tour`, two steps, an A/B split at step a, email and sms, repeated opens one
    of them a day later, two bounce kinds of one message, a message event without a message id, and a
    transactional send (not the journey's)."""
    a1, a2, b2 = ("tour", 1, "a"), ("tour", 2, "a"), ("tour", 2, "b")
    out = []
    for mid, ep, ch, j, variant, kinds in (
            ("m1", "u1-mail", "email", a1, "A", [("send", 0), ("delivered", 1), ("open", 2), ("open", DAY // MIN + 1),
                                                 ("click", DAY // MIN + 2)]),
            ("m2", "u2-mail", "email", a1, "B", [("send", 0), ("delivered", 1), ("open", 3), ("unsubscribe", 4)]),
            ("m3", "u1-mail", "email", a2, "A", [("send", 5), ("hard_bounce", 6), ("soft_bounce", 7)]),
            ("m6", "u3-mail", "email", a2, "B", [("send", 5), ("delivered", 6), ("open", 8), ("open", 9)]),
            ("m4", "u3-sms", "sms", b2, None, [("send", 10), ("delivered", 11), ("failed", 12), ("rejected", 13)]),
            ("m5", "u2-sms", "sms", b2, None, [("send", DAY // MIN), ("delivered", DAY // MIN + 1)])):
        for kind, minute in kinds:
            e = send_event(mid, endpoint_id=ep, channel=ch, journey=j, variant=variant, ts_ms=T0_MS + minute * MIN,
                           name_type=kind)
            out.append(msgspec.structs.replace(e, id=f"{mid}:{kind}:{minute}"))
    out.append(send_event("t1", endpoint_id="u4-mail", transactional=True, ts_ms=T0_MS + 20 * MIN))
    out.append(send_event("t1", endpoint_id="u4-mail", transactional=True, ts_ms=T0_MS + 21 * MIN,
                          name_type="delivered"))
    out.append(EventIn(name="_email.open", id="no-id-open", endpoint_id="u2-mail",
                       timestamp=datetime.fromtimestamp((T0_MS + 30 * MIN) / 1000, tz=timezone.utc),
                       attributes={"channel": "email", "journey_id": "tour", "journey_version": 1, "step_id": "a"}))
    return out


def _endpoints(api) -> None:
    for i in range(1, 5):
        api.put(f"/v1/endpoints/u{i}-mail", json={"channel": "EMAIL", "address": f"u{i}@example.com", "user_id": f"u{i}"})
    for i in (2, 3):
        api.put(f"/v1/endpoints/u{i}-sms", json={"channel": "SMS", "address": f"+1555000000{i}", "user_id": f"u{i}"})


def _by_hand(db, workspace_id: int, key, keep=lambda a, ts: True) -> dict:
    """{group: {metric: {total, customers, messages}}} from the message events' own JSON, in Python."""
    with db.connect() as conn:
        rows = conn.execute(select(events.c.name, events.c.user_pk, events.c.ts, events.c.attributes).where(
            events.c.workspace_id == workspace_id, events.c.name.like("\\_%", escape="\\"))).all()
    seen: dict = defaultdict(lambda: defaultdict(lambda: [0, set(), set()]))
    for name, user_pk, ts, attrs in rows:
        metric = METRIC_OF.get(name.split(".", 1)[1])
        if metric is None or not keep(attrs, ts):
            continue
        counts = seen[key(attrs)][metric]
        counts[0] += 1
        counts[1].add(user_pk)
        if attrs.get("message_id") is not None:
            counts[2].add(attrs["message_id"])
    return {g: {m: {"total": n, "customers": len(u), "messages": len(ids)} for m, (n, u, ids) in ms.items()}
            for g, ms in seen.items()}


def _counted(metrics: dict) -> dict:
    """A metrics block without the empty metrics and the conversions (which the hand count does not do)."""
    return {m: c for m, c in metrics.items() if m != "converted" and c["total"]}


WINDOWS = [(None, None), (T0_MS + 2 * MIN, None), (None, T0_MS + DAY), (T0_MS + DAY, T0_MS + 2 * DAY),
           (T0_MS + 3 * MIN, T0_MS + DAY + 2 * MIN)]  # cutting m1's and m2's events apart


def _within(since, until):
    return lambda attrs, ts: (since is None or ts >= since) and (until is None or ts < until)


def assert_exact(db, workspace) -> None:
    for since, until in WINDOWS:
        for version in (None, 1, 2):
            def keep(attrs, ts, version=version, since=since, until=until):
                return (attrs.get("journey_id") == "tour" and _within(since, until)(attrs, ts)
                        and (version is None or str(attrs.get("journey_version")) == str(version)))

            m = journey_metrics(db, workspace, "tour", version=version, since_ms=since, until_ms=until)
            where = f"version {version}, {since}-{until}"
            assert _counted(m["totals"]["metrics"]) == _by_hand(db, workspace.id, lambda a: (), keep).get((), {}), where
            for label, rows in (("step_id", m["steps"]), ("variant", m["variants"]), ("channel", m["channels"])):
                got = {r[label]: _counted(r["metrics"]) for r in rows}
                assert got == _by_hand(db, workspace.id, lambda a, label=label: a.get(label), keep), (label, where)
        o = message_metrics(db, workspace, since_ms=since, until_ms=until)
        assert _counted(o["totals"]["metrics"]) == _by_hand(db, workspace.id, lambda a: (), _within(since, until))[()]
        assert {r["channel"]: _counted(r["metrics"]) for r in o["channels"]} == _by_hand(
            db, workspace.id, lambda a: a.get("channel"), _within(since, until)), (since, until)
        in_window = _within(since, until)
        transactional = _by_hand(db, workspace.id, lambda a: (), lambda a, ts, in_window=in_window:
                                 a.get("transactional") is True and in_window(a, ts)).get((), {})
        assert _counted(o["transactional"]["metrics"]) == transactional, (since, until)


def test_counts_equal_the_events_counted_by_hand(api, db):
    _endpoints(api)
    workspace = ensure_workspace(db, "acme")
    record_events(db, workspace, _events())
    m = journey_metrics(db, workspace, "tour")["totals"]["metrics"]
    # the hand count's own sanity, on the figures a reader of the scenario expects
    assert m["opened"] == {"total": 6, "customers": 3, "messages": 3}  # m1 twice, m2, m6 twice, the id-less one
    assert m["bounced"] == {"total": 2, "customers": 1, "messages": 1}  # m3's hard and soft bounce
    assert m["failed"] == {"total": 2, "customers": 1, "messages": 1}  # m4 failed, then rejected
    assert_exact(db, workspace)

    # retention prunes events older than a cut-off (tidings.engine.ops.retention deletes them in batches):
    # m1's send, delivery and first open go, its later open and click stay (m2's open at 3 minutes stays)
    with db.begin() as conn:
        conn.execute(delete(events).where(events.c.workspace_id == workspace.id, events.c.ts < T0_MS + 3 * MIN))
    assert journey_metrics(db, workspace, "tour")["totals"]["metrics"]["opened"] == {
        "total": 5, "customers": 3, "messages": 3}
    assert_exact(db, workspace)

    # a later open of a message whose first events were pruned is the same message, not a new one
    record_events(db, workspace, [send_event("m1", endpoint_id="u1-mail", journey=("tour", 1, "a"), variant="A",
                                             ts_ms=T0_MS + 2 * DAY, name_type="open")])
    assert journey_metrics(db, workspace, "tour")["totals"]["metrics"]["opened"] == {
        "total": 6, "customers": 3, "messages": 3}
    assert_exact(db, workspace)
    with db.connect() as conn:  # one key per message id of the workspace, pruned or not
        ids = conn.execute(select(message_keys.c.message_id).where(message_keys.c.workspace_id == workspace.id)).scalars()
        assert sorted(ids) == ["m1", "m2", "m3", "m4", "m5", "m6", "t1"]


def test_keys_are_per_workspace(api, other_api, db):
    """The same message id in two workspaces is two messages, each counted in its own workspace."""
    _endpoints(api)
    _endpoints(other_api)
    for name in ("acme", "globex"):
        record_events(db, ensure_workspace(db, name), [
            send_event("same", endpoint_id="u1-mail", ts_ms=T0_MS),
            send_event("same", endpoint_id="u1-mail", ts_ms=T0_MS + MIN, name_type="open")])
    for name in ("acme", "globex"):
        t = message_metrics(db, ensure_workspace(db, name))["totals"]["metrics"]
        assert t["sent"] == {"total": 1, "customers": 1, "messages": 1} and t["opened"]["messages"] == 1
    with db.connect() as conn:
        assert len(conn.execute(select(message_keys.c.id).where(message_keys.c.message_id == "same")).all()) == 2
    # deleting a workspace takes its keys with it, and leaves the other's counts as they were
    delete_workspace(db, ensure_workspace(db, "globex"))
    with db.connect() as conn:
        assert len(conn.execute(select(message_keys.c.id).where(message_keys.c.message_id == "same")).all()) == 1
    assert message_metrics(db, ensure_workspace(db, "acme"))["totals"]["metrics"]["opened"]["messages"] == 1


@pytest.fixture
def before_message_keys(database_url):
    """A database migrated only to the revision before message keys."""
    engine = make_engine(database_url)
    migrate(engine, "0020_pagefast_step_tally")
    yield engine
    engine.dispose()


def test_migration_keys_the_facts_already_there(before_message_keys, database_url):
    """Events written before migration 0021 get their keys from it: the counts are the hand counts."""
    from tidings.engine.customers.tables import users

    db = before_message_keys
    workspace = ensure_workspace(db, "acme")
    with db.begin() as conn:
        for i in range(1, 5):
            conn.execute(users.insert().values(workspace_id=workspace.id, user_id=f"u{i}", attributes={}, metrics={},
                                               timezone="UTC", locale="en", created_at=T0_MS, updated_at=T0_MS))
    # the events as raw rows, each with its customer (the endpoints' owners of _events())
    with db.connect() as conn:
        pks = dict(conn.execute(select(users.c.user_id, users.c.id).where(users.c.workspace_id == workspace.id)).all())
    with db.begin() as conn:
        for n, e in enumerate(_events()):
            user = e.endpoint_id.split("-")[0]
            conn.execute(events.insert().values(workspace_id=workspace.id, event_id=e.id, user_pk=pks[user], name=e.name,
                                                ts=int(e.timestamp.timestamp() * 1000), attributes=e.attributes,
                                                metrics={}, received_at=T0_MS + n))
    migrate(db)
    assert journey_metrics(db, workspace, "tour")["totals"]["metrics"]["opened"] == {
        "total": 6, "customers": 3, "messages": 3}
    assert_exact(db, workspace)
