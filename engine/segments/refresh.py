"""Activity and schedule set-up for re-evaluating clock-dependent segments in SQL."""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import Engine, select
from temporalio import activity
from temporalio.client import Client

from tidings.engine.platform.installation import ensure_interval_schedule
from tidings.engine.workspaces.tables import workspaces
from tidings.engine.segments.refresh_workflow import ACTIVITY, SCHEDULE_ID, RefreshClockSegments
from tidings.engine.segments import backfill
from tidings.engine.segments.evaluate import evaluate_many_full, workspace_segments
from tidings.engine.platform.db import reading, writing

log = logging.getLogger("tidings.segments")
INTERVAL = timedelta(minutes=5)


def refresh_clock_segments(db: Engine, now_ms: int) -> int:
    """Full evaluation of every clock-dependent segment (and what depends on it); returns changes. First
    finishes any typed-index backfill a stopped process left (segments/backfill.py)."""
    backfill.resume_all(db)
    changed = 0
    with reading(db) as conn:
        ws_ids = list(conn.execute(select(workspaces.c.id)).scalars())
    for workspace_id in ws_ids:
        with reading(db) as conn:
            ids = {s.id for s in workspace_segments(conn, workspace_id) if s.clock}
        if ids:
            with writing(db) as conn:
                for entered, exited in evaluate_many_full(conn, workspace_id, ids, now_ms).values():
                    changed += entered + exited
    return changed


def make_activity(db: Engine):
    @activity.defn(name=ACTIVITY)
    def refresh(now_ms: int) -> int:
        return refresh_clock_segments(db, now_ms)

    return refresh


async def ensure_schedule(client: Client, task_queue: str, installation: str = "",
                          interval: timedelta = INTERVAL) -> str:
    """This installation's clock-segment schedule, created once (the worker calls this at every start)."""
    return await ensure_interval_schedule(client, installation, SCHEDULE_ID, RefreshClockSegments.run,
                                          task_queue, interval)
