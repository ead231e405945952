"""This installation's identity: a random token made when its database is created, so that several Tidings
installations (staging and production, or a database created again) can share one Temporal namespace
without their workflow and schedule ids meeting. Temporal refuses a second workflow under the id of a finished
one; without the token, a fresh database's first broadcast would be refused as "already run" and send nothing.

Databases created before the token existed keep an empty one, so the ids of their running workflows and
schedules stay what they were."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Optional

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from tidings.engine.platform.db import reading


class Installation(SQLModel, table=True):
    __tablename__ = "installation"
    id: str = Field(primary_key=True, max_length=32)


installations = Installation.__table__  # type: ignore[attr-defined]  # set by SQLModel

def installation_id(db: Engine) -> str:
    """The token ('' for a database older than it); read once per engine: it never changes."""
    known = db.__dict__.get("_tidings_installation")
    if known is None:
        with reading(db) as conn:
            found: Optional[str] = conn.execute(select(installations.c.id).limit(1)).scalar()
        known = db.__dict__["_tidings_installation"] = found or ""
    return known



def scoped(installation: str, temporal_id: str) -> str:
    """A workflow or schedule id within this installation."""
    return f"{installation}/{temporal_id}" if installation else temporal_id


async def ensure_interval_schedule(client: Any, installation: str, schedule_id: str, workflow: Any,
                                   task_queue: str, every: timedelta) -> str:
    """A Temporal schedule of this installation that starts `workflow` every `every`, created once (an
    existing one is left as it is: the worker calls this at every start); returns its id."""
    from temporalio.client import (
        Schedule, ScheduleActionStartWorkflow, ScheduleAlreadyRunningError, ScheduleIntervalSpec, ScheduleSpec,
    )

    sid = scoped(installation, schedule_id)
    try:
        await client.create_schedule(sid, Schedule(
            action=ScheduleActionStartWorkflow(workflow, id=f"{sid}-run", task_queue=task_queue),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)])))
    except ScheduleAlreadyRunningError:
        pass
    return sid
