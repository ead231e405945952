"""This installation's identity: a random token made when its database is created, so that several Tidings
installations (staging and production, or a database created again) can share one Temporal namespace
without their workflow and schedule ids meeting. Temporal refuses a second workflow under the id of a finished
one; without the token, a fresh database's first broadcast would be refused as "already run" and send nothing.

Databases created before the token existed keep an empty one, so the ids of their running workflows and
schedules stay what they were."""
from __future__ import annotations

from typing import Optional

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
