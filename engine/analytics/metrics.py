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
from tidings.engine.messaging.ledger import journey_event_names, names_of
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


def _attr(key: str):
    return events.c.attributes[key].as_string()


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
    """{group key values: metrics} for one GROUP BY (metric, keys...) over message events (SQLite: its
    json_extract is cheap, and these run in C; PostgreSQL reads with _one_pass)."""
    metric = case(_METRIC_OF_NAME, value=events.c.name, else_=literal("other")).label("metric")
    cols = [expr.label(label) for label, expr in keys]
    q = (select(metric, *cols, func.count().label("n"), func.count(distinct(events.c.user_pk)).label("u"),
                func.count(distinct(_attr("message_id"))).label("m"))
         .where(*where).group_by(literal_column("metric"), *[literal_column(label) for label, _ in keys]))
    out: dict[tuple, dict[str, dict[str, int]]] = defaultdict(_empty)
    for r in conn.execute(q):
        if r.metric not in METRICS:
            continue
        key = tuple(getattr(r, label) for label, _ in keys)
        out[key][r.metric] = {"total": r.n, "customers": r.u, "messages": r.m}
    return out


def _time_where(since_ms: int | None, until_ms: int | None) -> list:
    w = []
    if since_ms is not None:
        w.append(events.c.ts >= since_ms)
    if until_ms is not None:
        w.append(events.c.ts < until_ms)
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


def _goal_events(conn: Connection, workspace_id: int, goal: Goal, user_pks: set[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """(user_pk, ts) of the events that convert for `goal`: named like it (its resolved names, as the
    runtime reads them) and matching its `filter`."""
    if not user_pks:
        return []
    cols = [events.c.user_pk, events.c.ts] + ([events.c.name, events.c.attributes, events.c.metrics]
                                              if goal.filter is not None else [])
    q = select(*cols).where(events.c.workspace_id == workspace_id, events.c.name.in_(journey_event_names(goal.event, goal.names)),
                            events.c.ts >= lo, events.c.ts <= hi)
    # Filter in Python: the set of converters is small next to the events of that name in the window.
    return [(r.user_pk, r.ts) for r in conn.execute(q) if r.user_pk in user_pks and (
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
        where = [events.c.workspace_id == workspace.id, events.c.name.in_(ALL_NAMES), _attr("journey_id") == journey_id,
                 *_time_where(since_ms, until_ms)]
        if version is not None:
            where.append(events.c.attributes["journey_version"].as_integer() == version)
        totals, by_step, by_variant, by_channel, step_order, sends = _journey_pass(conn, where)

        control: dict[str, Any] = {"customers": 0, "converted": 0, "rate": None}
        if goal:
            _add_journey_conversions(conn, workspace.id, sends, chosen, window_ms, totals, (by_step, by_variant, by_channel))
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


def _text(value: Any) -> str | None:
    """A JSON attribute as SQL's `->>` / json_extract would give it as text (None for null or absent)."""
    if value is None or isinstance(value, str):
        return value
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _one_pass(conn: Connection, where: list, keys: tuple[str, ...]):
    """One read of the message events `where`, counted in Python: ({(metric, *values of `keys`, transactional):
    [events, customers, message ids]}, the first time of each value of keys[0], the sends as (user_pk, ts,
    attributes)). On PostgreSQL the attributes are `json` text that every `->>` parses again: one pass that
    parses each row once replaced a GROUP BY per grouping (and the step order, and the sends' query), each
    parsing every row two to four times (docs/production.md, "Console pages")."""
    fine: dict[tuple, list] = {}
    first: dict[Any, int] = {}
    sends: list[tuple[int, int, dict]] = []
    rows = conn.execute(select(events.c.name, events.c.user_pk, events.c.ts, events.c.attributes).where(*where)).all()
    for name, user_pk, ts, attrs in rows:
        metric = _METRIC_OF_NAME.get(name)
        if metric is None:
            continue
        a = attrs or {}
        values = tuple(_text(a.get(k)) for k in keys)
        key = (metric, *values, a.get("transactional") is True)
        acc = fine.get(key)
        if acc is None:
            acc = fine[key] = [0, set(), set()]
        acc[0] += 1
        acc[1].add(user_pk)
        acc[2].add(_text(a.get("message_id")))
        if keys and ts < first.get(values[0], ts + 1):
            first[values[0]] = ts
        if metric == "sent":
            sends.append((user_pk, ts, a))
    return fine, first, sends


def _merge(fine: dict[tuple, list], pick: int | None, only_transactional: bool = False
           ) -> dict[tuple, dict[str, dict[str, int]]]:
    """{(value of key `pick`,) or (): metrics} from _one_pass's counts."""
    merged: dict[tuple, dict[str, list]] = defaultdict(dict)
    for (metric, *values), (n, users, mids) in fine.items():
        if only_transactional and not values[-1]:
            continue
        m = merged[() if pick is None else (values[pick],)].setdefault(metric, [0, set(), set()])
        m[0] += n
        m[1] |= users
        m[2] |= mids
    done: dict[tuple, dict[str, dict[str, int]]] = defaultdict(_empty)
    for key, by_metric in merged.items():
        for metric, (n, users, mids) in by_metric.items():  # as COUNT(DISTINCT), leaving NULL out
            done[key][metric] = {"total": n, "customers": len(users - {None}), "messages": len(mids - {None})}
    return done


def _journey_pass(conn: Connection, where: list):
    """(totals, by step, by variant, by channel, the steps in the order of their first event, the sends as
    (user_pk, ts, (step, variant, channel))) of the journey's message events `where`."""
    keys = ("step_id", "variant", "channel")
    fine, first, sends = _one_pass(conn, where, keys)
    order = sorted(first, key=lambda k: first[k])
    return (_merge(fine, None).get((), _empty()), _merge(fine, 0), _merge(fine, 1), _merge(fine, 2), order,
            [(u, ts, tuple(_text(a.get(k)) for k in keys)) for u, ts, a in sends])


def _add_journey_conversions(conn: Connection, workspace_id: int, sends: list[tuple[int, int, Any]], goal: Goal,
                             window_ms: int, totals: dict, by_step_variant_channel: tuple[dict, dict, dict]) -> None:
    """Count the conversions of the journey's sends ((user_pk, ts, (step, variant, channel))) into the totals
    and each step, variant and channel group: a goal event within the window after a send converts it."""
    users = {u for u, _, _ in sends}
    lo = min((t for _, t, _ in sends), default=0)
    hi = max((t for _, t, _ in sends), default=0) + window_ms
    conv = _attribute(sends, _goal_events(conn, workspace_id, goal, users, lo, hi), window_ms)
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
    where = [events.c.workspace_id == workspace.id, events.c.name.in_(names), *_time_where(since_ms, until_ms)]
    with reading(db) as conn:
        if conn.dialect.name == "sqlite":  # three GROUP BYs in C beat one pass in Python there (measured)
            totals = _grouped(conn, where, []).get((), _empty())
            by_channel = _grouped(conn, where, [("channel", _attr("channel"))])
            transactional = _grouped(conn, [*where, events.c.attributes["transactional"].as_boolean().is_(True)],
                                     []).get((), _empty())
            sends = [(r.user_pk, r.ts, r.attributes or {}) for r in conn.execute(select(
                events.c.user_pk, events.c.ts, events.c.attributes).where(
                *where, events.c.name.in_(names_of(["send"])),
                events.c.attributes["transactional"].as_boolean().is_(True)))]
        else:
            fine, _, sends = _one_pass(conn, where, ("channel",))
            totals, by_channel = _merge(fine, None).get((), _empty()), _merge(fine, 0)
            transactional = _merge(fine, None, only_transactional=True).get((), _empty())
            sends = [(u, ts, a) for u, ts, a in sends if a.get("transactional") is True]
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
