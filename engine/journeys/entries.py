"""The ingestion seam: called from engine.changes.events_recorded inside every event write transaction.

Cheap by design: one indexed lookup of `journey_trigger` by the batch's event names; nothing else
runs unless an active journey cares about one of them. Matching events are queued in `journey_entry`
(the admission workflow applies the JsonLogic filter and entry limits); goal events mark runs as
converted and record `_journey.converted`.
"""
from __future__ import annotations

from sqlalchemy import Connection, select, update

from engine.clock import now_ms
from engine.db import bulk_insert, rows_where_in
from engine.journeys.models import journey_entries, journey_runs, journey_triggers


def listens(conn: Connection, workspace_id: int, names: tuple[str, ...]) -> bool:
    """Whether an active journey enters or converts on any of these event names."""
    return conn.execute(select(journey_triggers.c.journey_id).where(
        journey_triggers.c.workspace_id == workspace_id, journey_triggers.c.event_name.in_(names)).limit(1)).first() is not None


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


def _convert(conn: Connection, workspace_id: int, journey_id: str, within_ms: int | None, hits: list[dict]) -> None:
    from engine.events import record
    from engine.models import users
    from engine.schemas import EventIn

    pks = sorted({r["user_pk"] for r in hits})
    runs = rows_where_in(conn, journey_runs, ["id", "user_pk", "entered_at", "converted_at", "version", "variant"],
                         "user_pk", pks, {"workspace_id": workspace_id, "journey_id": journey_id})
    converted = []
    for run_id, pk, entered, conv, version, variant in runs:
        if conv is not None:
            continue
        for r in hits:
            at = r["received_at"]
            if r["user_pk"] == pk and at >= entered and (within_ms is None or at <= entered + within_ms):
                converted.append((run_id, pk, at, version, variant))
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

