"""Retention: prune old raw events, message events and finished journey runs, in short bounded batches,
never removing what something still reads.

A workspace keeps raw events `events_days`, message events (`_email.send`, `_sms.click`, ...)
`message_events_days` and finished journey runs `journey_runs_days` (table workspace_retention; DEFAULT_DAYS
when unset). An event older than its cutoff stays when any of these still reads it:

- an event stream has not delivered it yet (its id is after the slowest stream's cursor, enabled or not:
  a disabled stream resumes where it stopped);
- a segment rule reads its name (journey rules are JsonLogic over one event and the customer document,
  never over event history): `performed` with `within: W` keeps that
  name's events of the last W; `performed` without a window and `last_performed` with before/after keep
  them forever (a count or a date over all history); `last_performed` within/not_within W keeps the last W
  (an older occurrence cannot change the result: "not within" also holds for none); `active`/`inactive` W
  keeps every event of the last W;
- an active journey run may still wait for it: every event since the oldest active run's entry stays;
- a live journey's goal reads it: its goal events stay as long as the message events they convert
  (journey metrics attribute goal events to the journey's sends, which are kept `message_events_days`).

A finished journey run older than `journey_runs_days` stays while its journey is live (active or paused) and
limits entries (`max_entries`, `min_interval`): admission counts a customer's past runs.

Each batch selects at most `batch_size` primary keys and deletes them in its own transaction, so a write
waits for at most one batch (SQLite has a single writer; PostgreSQL locks only the rows of the batch).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, select
from temporalio import activity
from temporalio.client import Client

from tidings.engine.analytics.tables import event_streams
from tidings.engine.customers.tables import events
from tidings.engine.journeys import ir
from tidings.engine.journeys.counts import fold_step_tally
from tidings.engine.journeys.tables import journey_runs, journey_versions, journeys
from tidings.engine.messaging.ledger import parse_name
from tidings.engine.ops.retention_workflow import ACTIVITY, SCHEDULE_ID, PruneRetention
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.installation import ensure_interval_schedule
from tidings.engine.platform.errors import InvalidInput, NotFound
from tidings.engine.segments.rules import duration_ms
from tidings.engine.segments.tables import segments
from tidings.engine.workspaces.tables import workspace_retention, workspaces

log = logging.getLogger("tidings.retention")
DAY_MS = 86_400_000
DEFAULT_DAYS = 400
BATCH_SIZE = 1000
FOREVER = -1  # a keep-since instant before every event
LIVE_JOURNEYS = ("active", "paused")


@dataclass
class Retention:
    events_days: int = DEFAULT_DAYS
    message_events_days: int = DEFAULT_DAYS
    journey_runs_days: int = DEFAULT_DAYS


@dataclass
class Plan:
    """What a workspace must keep: the cutoff (exclusive upper bound on ts) per event name."""

    workspace: str
    workspace_id: int
    retention: Retention
    events_cut: int
    messages_cut: int
    runs_cut: int
    stream_floor: int | None  # events with a larger id are not delivered yet
    name_cuts: dict[str, int] = field(default_factory=dict)
    counted_journeys: set[str] = field(default_factory=set)  # entry limits count their finished runs


def get_retention(conn: Connection, workspace_id: int) -> Retention:
    row = conn.execute(select(workspace_retention).where(workspace_retention.c.workspace_id == workspace_id)).first()
    r = Retention()
    if row is not None:
        for name in ("events_days", "message_events_days", "journey_runs_days"):
            if getattr(row, name) is not None:
                setattr(r, name, getattr(row, name))
    return r


def workspace_id_of(conn: Connection, name: str) -> int:
    workspace_id = conn.execute(select(workspaces.c.id).where(workspaces.c.name == name)).scalar()
    if workspace_id is None:
        raise NotFound(f"no workspace named {name!r}", field="workspace")
    return workspace_id


def set_retention(db: Engine, workspace: str, **days: int | None) -> Retention:
    """Set a workspace's retention periods (days >= 1; None: the default)."""
    for name, value in days.items():
        if value is not None and value < 1:
            raise InvalidInput(f"{name} is at least 1 day, got {value}", field=name)
    with db.begin() as conn:
        workspace_id = workspace_id_of(conn, workspace)
        exists = conn.execute(select(workspace_retention.c.workspace_id).where(
            workspace_retention.c.workspace_id == workspace_id)).first()
        values = {**days, "updated_at": now_ms()}
        if exists:
            conn.execute(workspace_retention.update().where(
                workspace_retention.c.workspace_id == workspace_id).values(**values))
        else:
            conn.execute(workspace_retention.insert().values(workspace_id=workspace_id, **values))
        return get_retention(conn, workspace_id)


# ---- what rules read --------------------------------------------------------------------------------


def _rule_nodes(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("performed", "last_performed", "active", "inactive"):
                yield k, v
            yield from _rule_nodes(v)
    elif isinstance(value, list):
        for v in value:
            yield from _rule_nodes(v)


def _window(value: Any) -> int | None:
    return duration_ms(value) if isinstance(value, str) else None


def rule_keeps(rule: Any, now: int) -> tuple[dict[str, int], int | None]:
    """(event name -> keep events since this instant, keep every event since this instant or None)."""
    names: dict[str, int] = {}
    any_since: int | None = None

    def keep(name: Any, since: int) -> None:
        if isinstance(name, str):
            names[name] = min(names.get(name, since), since)

    for op, args in _rule_nodes(rule):
        if op in ("active", "inactive"):
            ms = _window(args)
            since = FOREVER if ms is None else now - ms
            any_since = since if any_since is None else min(any_since, since)
        elif isinstance(args, dict):
            ms = _window(args.get("within") if op == "performed" else args.get("within", args.get("not_within")))
            keep(args.get("event"), FOREVER if ms is None else now - ms)
    return names, any_since


# ---- the plan ---------------------------------------------------------------------------------------


def plan_workspace(conn: Connection, workspace_id: int, name: str, now: int) -> Plan:
    r = get_retention(conn, workspace_id)
    plan = Plan(name, workspace_id, r, now - r.events_days * DAY_MS, now - r.message_events_days * DAY_MS,
                now - r.journey_runs_days * DAY_MS,
                conn.execute(select(func.min(event_streams.c.cursor)).where(
                    event_streams.c.workspace_id == workspace_id)).scalar())
    keep: dict[str, int] = {}
    any_since = conn.execute(select(func.min(journey_runs.c.entered_at)).where(
        journey_runs.c.workspace_id == workspace_id, journey_runs.c.status == "active")).scalar()

    def merge(names: dict[str, int], since: int | None) -> None:
        nonlocal any_since
        for n, s in names.items():
            keep[n] = min(keep.get(n, s), s)
        if since is not None:
            any_since = since if any_since is None else min(any_since, since)

    for rule in conn.execute(select(segments.c.rule).where(segments.c.workspace_id == workspace_id)).scalars():
        merge(*rule_keeps(rule, now))
    live = select(journey_versions.c.journey_id, journey_versions.c.ir).join(journeys, and_(
        journeys.c.workspace_id == journey_versions.c.workspace_id,
        journeys.c.journey_id == journey_versions.c.journey_id)).where(
        journey_versions.c.workspace_id == workspace_id, journeys.c.status.in_(LIVE_JOURNEYS))
    for journey_id, text in conn.execute(live).all():
        settings = ir.JourneyIR.from_json(text).settings
        if settings.entry.max_entries is not None or settings.entry.min_interval_seconds:
            plan.counted_journeys.add(journey_id)
        goal = settings.goal
        if goal is not None:
            merge({n: plan.messages_cut for n in goal.names or [goal.event]}, None)

    base = max(plan.events_cut, plan.messages_cut)
    for n in conn.execute(select(events.c.name).where(
            events.c.workspace_id == workspace_id, events.c.ts < base).distinct()).scalars():
        cut = plan.messages_cut if parse_name(n) is not None else plan.events_cut
        cut = min(cut, keep.get(n, cut), any_since if any_since is not None else cut)
        if cut > FOREVER:
            plan.name_cuts[n] = cut
    return plan


def _event_groups(plan: Plan) -> list[Any]:
    """One WHERE clause per distinct cutoff (names sharing a cutoff are deleted together)."""
    by_cut: dict[int, list[str]] = {}
    for n, cut in plan.name_cuts.items():
        by_cut.setdefault(cut, []).append(n)
    where = []
    for cut, names in sorted(by_cut.items()):
        conds = [events.c.workspace_id == plan.workspace_id, events.c.name.in_(sorted(names)), events.c.ts < cut]
        if plan.stream_floor is not None:
            conds.append(events.c.id <= plan.stream_floor)
        where.append(and_(*conds))
    return where


def _runs_where(plan: Plan) -> Any:
    where = and_(journey_runs.c.workspace_id == plan.workspace_id, journey_runs.c.status != "active",
                 journey_runs.c.updated_at < plan.runs_cut)
    if plan.counted_journeys:
        where = and_(where, journey_runs.c.journey_id.not_in(sorted(plan.counted_journeys)))
    return where


@dataclass
class Pruned:
    workspace: str
    table: str
    rows: int


def _count(conn: Connection, table: Any, where: Any) -> int:
    return conn.execute(select(func.count()).select_from(table).where(where)).scalar() or 0


def _delete_batches(db: Engine, table: Any, where: Any, batch_size: int,
                    after_batch: Callable[[int], None] | None) -> int:
    """Delete the rows `where` selects, at most `batch_size` primary keys per transaction."""
    total, after = 0, 0
    while True:
        with db.begin() as conn:
            ids = list(conn.execute(select(table.c.id).where(where, table.c.id > after)
                                    .order_by(table.c.id).limit(batch_size)).scalars())
            if not ids:
                return total
            conn.execute(delete(table).where(table.c.id.in_(ids)))
        total, after = total + len(ids), ids[-1]
        if after_batch is not None:
            after_batch(len(ids))


def prune(db: Engine, *, dry_run: bool = False, batch_size: int = BATCH_SIZE, now: int | None = None,
          after_batch: Callable[[int], None] | None = None) -> list[Pruned]:
    """Prune every workspace (or, with dry_run, count what would go); rows per workspace and table."""
    now = now_ms() if now is None else now
    with db.connect() as conn:
        workspace = conn.execute(select(workspaces.c.id, workspaces.c.name).order_by(workspaces.c.id)).all()
    out: list[Pruned] = []
    for workspace_id, ws_name in workspace:
        with db.connect() as conn:
            plan = plan_workspace(conn, workspace_id, ws_name, now)
        groups = _event_groups(plan)
        msg_names = {n for n in plan.name_cuts if parse_name(n) is not None}
        counts = {"event": 0, "message_event": 0, "journey_run": 0}
        for where in groups:
            msg = and_(where, events.c.name.in_(sorted(msg_names)))
            raw = and_(where, events.c.name.not_in(sorted(msg_names))) if msg_names else where
            for table_name, w in (("message_event", msg), ("event", raw)):
                if dry_run:
                    with db.connect() as conn:
                        counts[table_name] += _count(conn, events, w)
                else:
                    counts[table_name] += _delete_batches(db, events, w, batch_size, after_batch)
        if dry_run:
            with db.connect() as conn:
                counts["journey_run"] = _count(conn, journey_runs, _runs_where(plan))
        else:
            counts["journey_run"] = _delete_batches(db, journey_runs, _runs_where(plan), batch_size, after_batch)
        out.extend(Pruned(ws_name, t, n) for t, n in counts.items())
    if not dry_run:
        fold_step_tally(db)  # the pruned runs were counted out of the tally; its gone writers' shards fold
    return out


# ---- the daily schedule (engine/ops/retention_workflow.py) ------------------------------------------

SCHEDULE_EVERY = timedelta(days=1)


def make_activity(db: Engine):
    @activity.defn(name=ACTIVITY)
    def prune_retention(now: int) -> int:
        pruned = prune(db, now=now, after_batch=lambda n: activity.heartbeat(n))
        for p in pruned:
            if p.rows:
                log.info("pruned %d %s rows of workspace %s", p.rows, p.table, p.workspace)
        return sum(p.rows for p in pruned)

    return prune_retention


async def ensure_schedule(client: Client, task_queue: str, installation: str = "",
                          every: timedelta = SCHEDULE_EVERY) -> str:
    """This installation's daily prune schedule, created once (the worker calls this at every start)."""
    return await ensure_interval_schedule(client, installation, SCHEDULE_ID, PruneRetention.run, task_queue, every)
