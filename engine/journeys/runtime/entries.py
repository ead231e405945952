"""The ingestion seam: registered on tidings.engine.customers.on_write by tidings.engine.wiring, called inside every event
write transaction (and for the segment events a write causes).

Cheap by design: one indexed lookup of `journey_trigger` by the batch's event names; nothing else
runs unless an active journey cares about one of them. Matching events are queued in `journey_entry`
(the admission workflow applies the JsonLogic filter and entry limits); goal events that match the goal
of a run's version (its name, `filter` and `within`) mark the run converted and record `_journey.converted`.
"""
from __future__ import annotations

import msgspec
from sqlalchemy import Connection, bindparam, select, update

from tidings.engine.customers.events import record
from tidings.engine.customers.schemas import EventIn
from tidings.engine.customers.tables import users
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import bulk_insert, rows_where_in
from tidings.engine.platform.metrics_registry import JOURNEY_ENTRIES_QUEUED
from tidings.engine.journeys import ir
from tidings.engine.journeys.tables import journey_entries, journey_runs, journey_triggers, journey_versions, journeys
from tidings.engine.journeys.runtime.rules import event_doc, holds
from tidings.engine.messaging.ledger import journey_event_names


# Built once: every write that changes a membership asks it, and building it cost more than running it.
_ANY_TRIGGER = select(journey_triggers.c.journey_id).where(
    journey_triggers.c.workspace_id == bindparam("workspace_id"),
    journey_triggers.c.event_name.in_(bindparam("names", expanding=True))).limit(1)


def listens(conn: Connection, workspace_id: int, names: tuple[str, ...]) -> bool:
    """Whether an active journey enters or converts on any of these event names."""
    return conn.execute(_ANY_TRIGGER, {"workspace_id": workspace_id, "names": list(names)}).first() is not None


def enqueue_matching(conn: Connection, workspace_id: int, rows: list[dict]) -> None:
    if not rows:
        return
    names = sorted({r["name"] for r in rows})
    triggers = conn.execute(select(journey_triggers).where(
        journey_triggers.c.workspace_id == workspace_id, journey_triggers.c.event_name.in_(names))).all()
    if not triggers:
        return
    now = now_ms()
    queued = []
    for t in triggers:
        hits = [r for r in rows if r["name"] == t.event_name
                and (t.segment_id is None or (r.get("attributes") or {}).get("segment_id") == t.segment_id)]
        if t.role == "entry":
            queued += [{"workspace_id": workspace_id, "journey_id": t.journey_id, "user_pk": r["user_pk"],
                        "event": {"id": r["event_id"], "name": r["name"], "attributes": r.get("attributes") or {},
                                  "metrics": r.get("metrics") or {}, "ts": r["ts"]}, "enqueued_at": now}
                       for r in hits]
        elif t.role == "goal" and hits:
            _convert(conn, workspace_id, t.journey_id, t.within_ms, hits)
    bulk_insert(conn, journey_entries, queued)
    JOURNEY_ENTRIES_QUEUED.inc(len(queued))


class _GoalSettings(msgspec.Struct):
    goal: ir.Goal | None = None


class _GoalOnly(msgspec.Struct):
    """The part of a stored JourneyIR the ingestion seam reads (the rest is skipped while decoding)."""

    settings: _GoalSettings = msgspec.field(default_factory=_GoalSettings)


def _goals(conn: Connection, workspace_id: int, journey_id: str, versions: set[int]) -> dict[int, ir.Goal | None]:
    """The goal of each version: a run converts on the goal of the version it runs (its filter and window)."""
    rows = rows_where_in(conn, journey_versions, ["version", "ir"], "version", sorted(versions),
                         {"workspace_id": workspace_id, "journey_id": journey_id})
    return {v: msgspec.json.decode(text, type=_GoalOnly).settings.goal for v, text in rows}


def _converts(goal: ir.Goal, r: dict, entered: int) -> bool:
    """Whether the stored goal-named event `r` converts a run that entered at `entered`."""
    at = r["received_at"]
    if at < entered or (goal.within_seconds is not None and at > entered + goal.within_seconds * 1000):
        return False
    if r["name"] not in journey_event_names(goal.event, goal.names):
        return False
    return holds(goal.filter, {"event": event_doc(r["name"], r.get("attributes") or {}, r.get("metrics") or {},
                                                  r["ts"])})


def _convert(conn: Connection, workspace_id: int, journey_id: str, within_ms: int | None, hits: list[dict]) -> None:
    pks = sorted({r["user_pk"] for r in hits})
    runs = [r for r in rows_where_in(conn, journey_runs, ["id", "user_pk", "entered_at", "converted_at", "version",
                                                          "variant"], "user_pk", pks,
                                     {"workspace_id": workspace_id, "journey_id": journey_id}) if r[3] is None]
    if not runs:
        return
    active = conn.execute(select(journeys.c.active_version).where(
        journeys.c.workspace_id == workspace_id, journeys.c.journey_id == journey_id)).scalar()
    goals = _goals(conn, workspace_id, journey_id, {r[4] for r in runs} | ({active} if active else set()))
    # the trigger's goal (the active version's) for runs of a version that had none
    fallback = goals.get(active) or ir.Goal(event=hits[0]["name"], within_seconds=within_ms // 1000 if within_ms else None)
    converted = []
    for run_id, pk, entered, _, version, variant in runs:
        goal = goals.get(version) or fallback
        for r in hits:
            if r["user_pk"] == pk and _converts(goal, r, entered):
                converted.append((run_id, pk, r["received_at"], version, variant))
                break
    if not converted:
        return
    for run_id, _, at, _, _ in converted:
        conn.execute(update(journey_runs).where(journey_runs.c.id == run_id).values(converted_at=at))
    ids = dict(rows_where_in(conn, users, ["id", "user_id"], "id", [c[1] for c in converted]))
    record(conn, workspace_id, [
        EventIn(id=f"converted:{run_id}", name="_journey.converted", user_id=ids[pk],
                attributes={"journey_id": journey_id, "journey_version": version, "variant": variant,
                            "run_id": run_id})
        for run_id, pk, _, version, variant in converted if pk in ids])
