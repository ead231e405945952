"""Segment tables. Registered on SQLModel.metadata; created by migration 0002_segments.

`customer_value` is the typed index full evaluation runs on: one row per scalar at a path some segment
of the workspace reads (`indexed_path`) (user-level rows have ep = 0, endpoint rows carry the endpoint's row id), with the value's class
in `kind` so SQL can reproduce JsonLogic's coercions exactly or hand the row to Python:
  n number, b bool (num 0/1), l list (num = length), i list item (txt), s numeric string (num parsed),
  t text that is surely NaN as a number, z empty string, o other string (Python decides).
`ts` holds the epoch ms of a string that parses as an ISO-8601 date (the date operators read it).
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, String, Text
from sqlmodel import Field, SQLModel


class Segment(SQLModel, table=True):
    __tablename__ = "segment"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    id: str = Field(max_length=100, primary_key=True)
    name: str = Field(max_length=255)
    kind: str = Field(max_length=16)  # dynamic | static
    rule: Optional[Any] = Field(default=None, sa_column=Column(JSON, nullable=True))
    version: int = 1
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class SegmentVersion(SQLModel, table=True):
    __tablename__ = "segment_version"
    workspace_id: int = Field(primary_key=True)
    segment_id: str = Field(max_length=100, primary_key=True)
    version: int = Field(primary_key=True)
    name: str = Field(max_length=255)
    rule: Optional[Any] = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class SegmentMember(SQLModel, table=True):
    __tablename__ = "segment_member"
    # WITHOUT ROWID on SQLite: the primary key is the table, one b-tree fewer per membership change
    __table_args__ = (Index("ix_segment_member_user", "workspace_id", "user_pk"), {"sqlite_with_rowid": False})
    workspace_id: int = Field(primary_key=True)
    segment_id: str = Field(max_length=100, primary_key=True)
    user_pk: int = Field(primary_key=True)
    since: int = Field(sa_column=Column(BigInteger, nullable=False))


class StaticMember(SQLModel, table=True):
    """Who an import put in a static segment (its filter rule, if any, then refines this set)."""

    __tablename__ = "static_member"
    __table_args__ = (Index("ix_static_member_user", "workspace_id", "user_pk"),)
    workspace_id: int = Field(primary_key=True)
    segment_id: str = Field(max_length=100, primary_key=True)
    user_pk: int = Field(primary_key=True)


class CustomerValue(SQLModel, table=True):
    __tablename__ = "customer_value"
    __table_args__ = (
        # covering: full evaluation looks each candidate's values up here without touching the table
        Index("ix_cv_user", "user_pk", "path", "ep", "kind", "num", "txt", "ts"),
        Index("ix_cv_path_txt", "workspace_id", "path", "kind", "txt", "ep", "user_pk"),
        Index("ix_cv_path_num", "workspace_id", "path", "kind", "num", "ep", "user_pk"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int
    user_pk: int
    ep: int = 0
    path: str = Field(sa_column=Column(String(120), nullable=False))
    kind: str = Field(sa_column=Column(String(1), nullable=False))
    txt: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    num: Optional[float] = Field(default=None, sa_column=Column(Float(53), nullable=True))
    ts: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class IndexedPath(SQLModel, table=True):
    """The paths `customer_value` holds for a workspace: those some segment reads (see segments/paths.py).
    scope 'u': user-level values (ep = 0); 'e': endpoint values. A user-level path also has a `slot`: its
    columns k{slot} (kind), n{slot} (num), t{slot} (txt), d{slot} (ts) in the workspace's wide table
    `cv_wide_{workspace_id}` (one row per customer; see segments/paths.py)."""

    __tablename__ = "indexed_path"
    workspace_id: int = Field(primary_key=True)
    scope: str = Field(max_length=1, primary_key=True)
    path: str = Field(max_length=120, primary_key=True)
    slot: Optional[int] = Field(default=None, sa_column=Column(Integer, nullable=True))
    # the backfill's watermark (segments/backfill.py): NULL when filled for every customer, else the user pk
    # up to which it is filled (writes index their own rows, whatever their pk)
    filled_to: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class ImportJob(SQLModel, table=True):
    __tablename__ = "import_job"
    id: str = Field(max_length=40, primary_key=True)
    workspace_id: int = Field(index=True)
    segment_id: str = Field(max_length=100)
    status: str = Field(max_length=16)  # running | succeeded | failed
    rows_done: int = 0
    rows_total: Optional[int] = Field(default=None, sa_column=Column(Integer, nullable=True))
    errors: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    message: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    finished_at: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class JourneySegmentRef(SQLModel, table=True):
    """Written by the journeys work: which journeys use which segments (DELETE answers 409 while active)."""

    __tablename__ = "journey_segment_ref"
    workspace_id: int = Field(primary_key=True)
    journey_id: str = Field(max_length=100, primary_key=True)
    segment_id: str = Field(max_length=100, primary_key=True)
    active: bool = True


class PinpointJob(SQLModel, table=True):
    """An import or export job of the Pinpoint-compatible API (api/pinpoint/jobs.py), written once with its
    outcome (an import's row in the same transaction as what it imported)."""

    __tablename__ = "pinpoint_job"
    id: str = Field(max_length=40, primary_key=True)
    workspace_id: int = Field(index=True)
    type: str = Field(max_length=8)  # IMPORT | EXPORT
    status: str = Field(max_length=16)  # COMPLETED | FAILED
    segment_id: str = Field(max_length=100)
    definition: Any = Field(sa_column=Column(JSON, nullable=False))
    failures: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    total_failures: int = 0
    total_processed: int = 0
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    completed_at: int = Field(sa_column=Column(BigInteger, nullable=False))


segments = Segment.__table__
segment_versions = SegmentVersion.__table__
segment_members = SegmentMember.__table__
static_members = StaticMember.__table__
customer_values = CustomerValue.__table__
indexed_paths = IndexedPath.__table__
import_jobs = ImportJob.__table__
pinpoint_jobs = PinpointJob.__table__
journey_segment_refs = JourneySegmentRef.__table__
