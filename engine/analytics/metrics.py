"""Delivery and response metrics, attribution and lift: GROUP BYs over message events.

Each metric has `total` (events), `customers` (COUNT DISTINCT user_pk) and `messages` (distinct
message ids). Rates divide distinct messages: delivery = delivered/sent, open = opened/delivered (sent
when the channel reports no deliveries), click = clicked/same base, click_to_open = clicked/opened,
bounce = bounced/sent, unsubscribe = unsubscribed/base, conversion = converted customers/customers sent.

Attribution: a conversion (an event named like the goal, at time t) counts for the last message of the
journey the customer was sent at or before t, if t is within the goal window after that send. For
transactional sends the goal comes with the send (`goal: {"event", "within_seconds"}` in its attributes)
and the conversion counts for the last transactional message with that goal.

Control and lift: the journey's control group is its runs that ended `held_out` (journey_run, written
by the runtime's holdout step); those customers who converted within the window after being held out
give the control rate; lift = (treatment rate - control rate) / control rate, where treatment rate =
converted customers / customers sent. The goal, unless the caller names one, is the journey's own
(`settings.goal` of the version asked for, else the current one).
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Engine, case, distinct, func, literal, literal_column, select

from tidings.engine.platform.db import reading
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.journeys.ir import Goal
from tidings.engine.journeys.runtime.rules import event_doc, holds
from tidings.engine.analytics.tables import message_facts as facts
from tidings.engine.messaging.ledger import SEND_NAMES, journey_event_names, names_of
from tidings.engine.customers.tables import events
from tidings.engine.workspaces.service import WorkspaceRef

METRICS = {
    "sent": ("send",),
    "delivered": ("delivered",),
    "failed": ("failed", "rejected", "rendering_failure"),
    "bounced": ("hard_bounce", "soft_bounce"),
    "complained": ("complaint",),
    "opened": ("open",),
    "clicked": ("click",),
    "unsubscribed": ("unsubscribe",),
}
ALL_NAMES = names_of([t for ts in METRICS.values() for t in ts])
DEFAULT_WINDOW_SECONDS = 7 * 24 * 3600


def _empty() -> dict[str, dict[str, int]]:
    return {m: {"total": 0, "customers": 0, "messages": 0} for m in (*METRICS, "converted")}


def _rates(m: dict[str, dict[str, int]]) -> dict[str, float | None]:
    def div(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    sent = m["sent"]["messages"]
    base = m["delivered"]["messages"] or sent
    return {
        "delivery": div(m["delivered"]["messages"], sent), "bounce": div(m["bounced"]["messages"], sent),
        "open": div(m["opened"]["messages"], base), "click": div(m["clicked"]["messages"], base),
        "click_to_open": div(m["clicked"]["messages"], m["opened"]["messages"]),
        "unsubscribe": div(m["unsubscribed"]["messages"], base),
        "conversion": div(m["converted"]["customers"], m["sent"]["customers"]),
    }


_METRIC_OF_NAME = {f"_{c}.{t}": m for m, ts in METRICS.items() for t in ts
                   for c in ("email", "sms", "voice", "push", "webhook", "custom")}


def _grouped(conn: Connection, where: list, keys: list[tuple[str, Any]]) -> dict[tuple, dict[str, dict[str, int]]]:
    """{group key values: metrics} for one GROUP BY (metric, keys...) over the message facts `where` (the
    message events' grouping attributes as columns: tidings.engine.analytics.tables.MessageFact), read
    from a covering index, no JSON parsed."""
    metric = case(_METRIC_OF_NAME, value=facts.c.name, else_=literal("other")).label("metric")
    cols = [expr.label(label) for label, expr in keys]
    q = (select(metric, *cols, func.count().label("n"), func.count(distinct(facts.c.user_pk)).label("u"),
                func.count(distinct(facts.c.message_key)).label("m"))
         .where(*where).group_by(literal_column("metric"), *[literal_column(label) for label, _ in keys]))
    out: dict[tuple, dict[str, dict[str, int]]] = defaultdict(_empty)
    for r in conn.execute(q):
        if r.metric not in METRICS:
            continue
        key = tuple(getattr(r, label) for label, _ in keys)
        out[key][r.metric] = {"total": r.n, "customers": r.u, "messages": r.m}
    return out


def _fine(conn: Connection, where: list, cols: list) -> list[tuple[str, tuple, dict[str, int], int, int]]:
    """(metric, values of `cols`, counts, first time, last time) per group of one GROUP BY (metric, *cols) over the
    message facts `where`: the finest grouping a page needs, read once."""
    metric = case(_METRIC_OF_NAME, value=facts.c.name, else_=literal("other")).label("metric")
    labels = [f"k{i}" for i in range(len(cols))]
    q = (select(metric, *[c.label(label) for c, label in zip(cols, labels)], func.count().label("n"),
                func.count(distinct(facts.c.user_pk)).label("u"), func.count(distinct(facts.c.message_key)).label("m"),
                func.min(facts.c.ts).label("first"), func.max(facts.c.ts).label("last"))
         .where(*where).group_by(literal_column("metric"), *[literal_column(label) for label in labels]))
    return [(r.metric, tuple(r[1:1 + len(cols)]), {"total": r.n, "customers": r.u, "messages": r.m}, r.first, r.last)
            for r in conn.execute(q) if r.metric in METRICS]


def _coarser(fine: list[tuple[str, tuple, dict[str, int], int, int]], pick: tuple[int, ...], keep=lambda values: True
             ) -> dict[tuple, dict[str, dict[str, int]]] | None:
    """The fine groups' counts by the values at `pick` (of the groups `keep` keeps), when each coarser group
    is one fine group per metric, so its distinct customers and messages are the fine group's, exactly (the
    usual case: a step has one channel and no A/B split, a workspace one channel); None otherwise: that
    grouping needs its own COUNT(DISTINCT)s (_grouped)."""
    seen: dict[tuple, dict[str, int]] = {}
    for metric, values, counts, *_times in fine:
        if not keep(values):
            continue
        key = (metric, *(values[i] for i in pick))
        if key in seen:
            return None
        seen[key] = counts
    out: dict[tuple, dict[str, dict[str, int]]] = defaultdict(_empty)
    for key, counts in seen.items():
        out[key[1:]][key[0]] = counts
    return out


def _time_where(since_ms: int | None, until_ms: int | None) -> list:
    w = []
    if since_ms is not None:
        w.append(facts.c.ts >= since_ms)
    if until_ms is not None:
        w.append(facts.c.ts < until_ms)
    return w


# ---- attribution ----------------------------------------------------------------------------------------


def _attribute(sends: list[tuple[int, int, Any]], conversions: list[tuple[int, int]], window_ms: int) -> list[tuple[Any, int]]:
    """sends: (user_pk, ts, key); conversions: (user_pk, ts). Returns (key, user_pk) per attributed conversion."""
    by_user: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for user, ts, key in sends:
        by_user[user].append((ts, key))
    for lst in by_user.values():
        lst.sort(key=lambda x: x[0])
    out = []
    for user, ts in conversions:
        lst = by_user.get(user)
        if not lst:
            continue
        i = bisect.bisect_right([s for s, _ in lst], ts) - 1
        if i >= 0 and ts - lst[i][0] <= window_ms:
            out.append((lst[i][1], user))
    return out


def _goal_events(conn: Connection, workspace_id: int, goal: Goal, user_pks: set[int] | None, lo: int, hi: int
                 ) -> list[tuple[int, int]]:
    """(user_pk, ts) of the events that convert for `goal`: named like it (its resolved names, as the
    runtime reads them) and matching its `filter`; of the customers `user_pks` (None: anyone's)."""
    if user_pks is not None and not user_pks:
        return []
    cols = [events.c.user_pk, events.c.ts] + ([events.c.name, events.c.attributes, events.c.metrics]
                                              if goal.filter is not None else [])
    q = select(*cols).where(events.c.workspace_id == workspace_id, events.c.name.in_(journey_event_names(goal.event, goal.names)),
                            events.c.ts >= lo, events.c.ts <= hi)
    # Filter in Python: the set of converters is small next to the events of that name in the window.
    return [(r.user_pk, r.ts) for r in conn.execute(q) if (user_pks is None or r.user_pk in user_pks) and (
        goal.filter is None or holds(goal.filter, {"event": event_doc(r.name, r.attributes or {}, r.metrics or {},
                                                                     r.ts)}))]


def journey_goal(conn: Connection, workspace_id: int, journey_id: str, version: int | None = None) -> Goal | None:
    """The journey's goal (event, within_seconds, filter) from its compiled definition; None without one."""
    from tidings.engine.journeys.store import ir_of

    found = ir_of(conn, workspace_id, journey_id, version)
    return None if found is None else found.settings.goal


# ---- journeys -------------------------------------------------------------------------------------------


def journey_metrics(db: Engine, workspace: WorkspaceRef, journey_id: str, *, version: int | None = None,
                    goal: str | None = None, within_seconds: int | None = None, since_ms: int | None = None,
                    until_ms: int | None = None) -> dict[str, Any]:
    with reading(db) as conn:
        # the journey's own goal (with its filter), unless the caller names another event
        chosen = Goal(event=goal) if goal is not None else journey_goal(conn, workspace.id, journey_id, version)
        if chosen is not None:
            goal, within_seconds = chosen.event, within_seconds or chosen.within_seconds
        window_ms = (within_seconds or DEFAULT_WINDOW_SECONDS) * 1000
        where = [facts.c.workspace_id == workspace.id, facts.c.journey_id == journey_id,
                 facts.c.name.in_(ALL_NAMES), *_time_where(since_ms, until_ms)]
        if version is not None:
            where.append(facts.c.journey_version == str(version))
        fine, totals, by_step, by_variant, by_channel, step_order = _journey_groups(conn, where)

        control: dict[str, Any] = {"customers": 0, "converted": 0, "rate": None}
        if goal:
            conv = _journey_conversions(conn, workspace.id, where, fine, chosen, window_ms)
            _add_journey_conversions(conv, totals, (by_step, by_variant, by_channel))
            control = _control(conn, workspace.id, journey_id, version, chosen, window_ms, since_ms, until_ms)

    def rows(groups: dict, label: str, order: list | None = None) -> list[dict[str, Any]]:
        keys = sorted(groups, key=lambda k: (order.index(k[0]) if order and k[0] in order else 1e9, str(k[0])))
        return [{label: k[0], "metrics": groups[k], "rates": _rates(groups[k])} for k in keys]

    treatment_rate = _rates(totals)["conversion"] if goal else None
    lift = None
    if goal and control["rate"] and treatment_rate is not None:
        lift = round((treatment_rate - control["rate"]) / control["rate"], 4)
    return {
        "journey_id": journey_id, "version": version,
        "goal": {"event": goal, "within_seconds": window_ms // 1000,
                 "filter": chosen.filter if chosen is not None else None} if goal else None,
        "totals": {"metrics": totals, "rates": _rates(totals)},
        "steps": rows(by_step, "step_id", step_order), "variants": rows(by_variant, "variant"),
        "channels": rows(by_channel, "channel"),
        "control": control, "treatment_rate": treatment_rate, "lift": lift,
    }


def _journey_groups(conn: Connection, where: list):
    """(the fine groups, totals, by step, by variant, by channel, the steps in the order of their first
    event) of the journey's message facts `where`."""
    keys = [("step_id", facts.c.step_id), ("variant", facts.c.variant), ("channel", facts.c.channel)]
    fine = _fine(conn, where, [c for _, c in keys])
    first: dict[Any, int] = {}
    for _, (step, *_rest), _, ts, _last in fine:
        first[step] = min(ts, first.get(step, ts))
    order = sorted(first, key=lambda k: first[k])

    def by(pick: tuple[int, ...]) -> dict[tuple, dict[str, dict[str, int]]]:
        found = _coarser(fine, pick)
        return found if found is not None else _grouped(conn, where, [keys[i] for i in pick])

    return fine, by(()).get((), _empty()), by((0,)), by((1,)), by((2,)), order


# Converters up to this many: their sends are read by customer; more, and every send of the journey is read.
SENDS_BY_CUSTOMER_UP_TO = 5_000


def _journey_conversions(conn: Connection, workspace_id: int, where: list, fine: list, goal: Goal, window_ms: int
                         ) -> list[tuple[Any, int]]:
    """((step, variant, channel), user_pk) per conversion of the journey's sends `where`: a goal event within
    the window after a send converts it. The goal events come first (from the sends' first to last time plus
    the window): only the sends of the customers who had one are read, not every send of the journey."""
    sent = [(first, last) for metric, _, _, first, last in fine if metric == "sent"]
    if not sent:
        return []
    lo, hi = min(f for f, _ in sent), max(last for _, last in sent) + window_ms
    goal_events = _goal_events(conn, workspace_id, goal, None, lo, hi)
    users = sorted({u for u, _ in goal_events})
    if not users:
        return []
    q = select(facts.c.user_pk, facts.c.ts, facts.c.step_id, facts.c.variant, facts.c.channel).where(
        *where, facts.c.name.in_(SEND_NAMES))
    if len(users) > SENDS_BY_CUSTOMER_UP_TO:
        rows = conn.execute(q).all()
    else:
        rows = [r for i in range(0, len(users), 500) for r in conn.execute(q.where(facts.c.user_pk.in_(users[i:i + 500])))]
    sends = [(u, ts, (step, variant, channel)) for u, ts, step, variant, channel in rows]
    return _attribute(sends, goal_events, window_ms)


def _add_journey_conversions(conv: list[tuple[Any, int]], totals: dict,
                             by_step_variant_channel: tuple[dict, dict, dict]) -> None:
    """Count the conversions into the totals and each step, variant and channel group."""
    _add_conversions(totals, [(None, u) for _, u in conv])
    for groups, pick in zip(by_step_variant_channel, (0, 1, 2)):
        per: dict[Any, list] = defaultdict(list)
        for key, u in conv:
            per[key[pick]].append((None, u))
        for k, lst in per.items():
            _add_conversions(groups[(k,)], lst)


def _add_conversions(metrics: dict[str, dict[str, int]], conv: list[tuple[Any, int]]) -> None:
    metrics["converted"]["total"] += len(conv)
    metrics["converted"]["customers"] += len({u for _, u in conv})
    metrics["converted"]["messages"] += len(conv)


def holdout_customers(conn: Connection, workspace_id: int, journey_id: str, version: int | None, since_ms: int | None,
                      until_ms: int | None) -> list[tuple[int, int]]:
    """(user_pk, held-out time) of the journey's control group: its runs that ended `held_out`. The
    time is when the run reached its holdout step (its last step's `at`), else its last update."""
    from tidings.engine.journeys.tables import journey_runs

    q = select(journey_runs.c.user_pk, journey_runs.c.steps, journey_runs.c.updated_at).where(
        journey_runs.c.workspace_id == workspace_id, journey_runs.c.journey_id == journey_id,
        journey_runs.c.status == "held_out")
    if version is not None:
        q = q.where(journey_runs.c.version == version)
    first: dict[int, int] = {}
    for pk, steps, updated in conn.execute(q):
        at = next((s["at"] for s in reversed(steps or []) if isinstance(s, dict) and s.get("at")), updated)
        if (since_ms is None or at >= since_ms) and (until_ms is None or at < until_ms):
            first[pk] = min(at, first.get(pk, at))
    return list(first.items())


def _control(conn: Connection, workspace_id: int, journey_id: str, version: int | None, goal: Goal, window_ms: int,
             since_ms: int | None, until_ms: int | None) -> dict[str, Any]:
    held = holdout_customers(conn, workspace_id, journey_id, version, since_ms, until_ms)
    if not held:
        return {"customers": 0, "converted": 0, "rate": None}
    lo = min(t for _, t in held)
    hi = max(t for _, t in held) + window_ms
    conv = _attribute([(u, t, None) for u, t in held], _goal_events(conn, workspace_id, goal, {u for u, _ in held}, lo, hi),
                      window_ms)
    converted = len({u for _, u in conv})
    return {"customers": len(held), "converted": converted, "rate": round(converted / len(held), 4)}


# ---- all messages ---------------------------------------------------------------------------------------


def message_metrics(db: Engine, workspace: WorkspaceRef, *, since_ms: int | None = None, until_ms: int | None = None,
                    channel: str | None = None) -> dict[str, Any]:
    """Every message of the workspace (journeys and transactional), by channel and by source."""
    names = ALL_NAMES
    if channel is not None:  # `?channel=` (empty) names no channel: refused, not read as "all"
        channel = channel.lower()
        names = [n for n in ALL_NAMES if n.startswith(f"_{channel}.")]
        if not names:
            raise InvalidInput(f"unknown channel {channel!r}", field="channel")
    where = [facts.c.workspace_id == workspace.id, facts.c.name.in_(names), *_time_where(since_ms, until_ms)]
    with reading(db) as conn:
        fine = _fine(conn, where, [facts.c.channel, facts.c.transactional])
        found = _coarser(fine, ())
        totals = (found if found is not None else _grouped(conn, where, [])).get((), _empty())
        by_channel = _coarser(fine, (0,)) or _grouped(conn, where, [("channel", facts.c.channel)])
        found = _coarser(fine, (), keep=lambda values: bool(values[1]))
        transactional = (found if found is not None else _grouped(
            conn, [*where, facts.c.transactional.is_(True)], [])).get((), _empty())
        # the transactional sends' goals are in their events' attributes
        sends = [(r.user_pk, r.ts, r.attributes or {}) for r in conn.execute(
            select(events.c.user_pk, events.c.ts, events.c.attributes).join(facts, facts.c.event_pk == events.c.id)
            .where(*where, facts.c.name.in_(SEND_NAMES), facts.c.transactional.is_(True)))]
        conv = _transactional_conversions(conn, workspace.id, sends)
        _add_conversions(transactional, conv)
        _add_conversions(totals, conv)
    journeys = {m: {k: totals[m][k] - transactional[m][k] for k in totals[m]} for m in totals}
    journeys["converted"] = {"total": 0, "customers": 0, "messages": 0}  # see GET /v1/journeys/{id}/metrics
    return {
        "since": since_ms, "until": until_ms, "channel": channel,
        "totals": {"metrics": totals, "rates": _rates(totals)},
        "channels": [{"channel": k[0], "metrics": v, "rates": _rates(v)} for k, v in sorted(by_channel.items(), key=str)],
        "transactional": {"metrics": transactional, "rates": _rates(transactional)},
        "journeys": {"metrics": journeys, "rates": _rates(journeys)},
    }


def _transactional_conversions(conn: Connection, workspace_id: int, sends: list[tuple[int, int, dict]]
                               ) -> list[tuple[Any, int]]:
    """Conversions of transactional sends ((user_pk, ts, attributes)) that carry a goal."""
    by_goal: dict[tuple[str, int], list[tuple[int, int, Any]]] = defaultdict(list)
    for user_pk, ts, attrs in sends:
        g = attrs.get("goal")
        if isinstance(g, dict) and g.get("event"):
            within = int(g.get("within_seconds") or DEFAULT_WINDOW_SECONDS)
            by_goal[(g["event"], within)].append((user_pk, ts, attrs.get("message_id")))
    out = []
    for (name, within), sends in by_goal.items():
        lo = min(t for _, t, _ in sends)
        hi = max(t for _, t, _ in sends) + within * 1000
        out += _attribute(sends, _goal_events(conn, workspace_id, Goal(event=name), {u for u, _, _ in sends}, lo, hi),
                          within * 1000)
    return out
