"""Tables of the journey runtime. Created by migration 0004_journeys.

- `journey`: one row per journey id in a workspace: status and the current version.
- `journey_version`: every version ever put (YAML, compiled IR as JSON, source hash).
- `journey_run`: one row per customer entry: where they are, the steps they took, how it ended.
- `journey_cohort`: each cohort workflow started (its claim key makes admission idempotent).
- `journey_trigger`: event names that matter to active journeys (entry, goal), read by the ingestion seam.
- `journey_entry`: the durable queue of admissions, filled inside the event write transaction.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


# The values of the status columns (stored as text).
JourneyStatus = Literal["draft", "active", "paused", "stopped"]
RunStatus = Literal["active", "completed", "exited", "held_out"]


class Journey(SQLModel, table=True):
    __tablename__ = "journey"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    journey_id: str = Field(max_length=100, primary_key=True)
    name: str = Field(max_length=255)
    status: str = Field(max_length=16)  # JourneyStatus
    version: int  # the current version
    active_version: Optional[int] = None  # the version activation last rolled out
    next_cohort: int = 1
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class JourneyVersion(SQLModel, table=True):
    __tablename__ = "journey_version"
    workspace_id: int = Field(primary_key=True)
    journey_id: str = Field(max_length=100, primary_key=True)
    version: int = Field(primary_key=True)
    yaml: str = Field(sa_column=Column(Text, nullable=False))
    ir: str = Field(sa_column=Column(Text, nullable=False))
    source_hash: str = Field(max_length=64)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class JourneyRun(SQLModel, table=True):
    __tablename__ = "journey_run"
    __table_args__ = (
        Index("ix_journey_run_user", "workspace_id", "journey_id", "user_pk"),
        Index("ix_journey_run_cohort", "workspace_id", "journey_id", "cohort"),
        Index("ix_journey_run_status_updated", "workspace_id", "status", "updated_at"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int
    journey_id: str = Field(max_length=100)
    version: int
    user_pk: int
    cohort: int
    workflow_id: str = Field(max_length=255)
    current_step: Optional[str] = Field(default=None, max_length=100)
    status: str = Field(max_length=16)  # RunStatus
    exit_reason: Optional[str] = Field(default=None, max_length=255)
    entered_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    converted_at: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    steps: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    variant: Optional[str] = Field(default=None, max_length=100)
    entry: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class JourneyCohort(SQLModel, table=True):
    __tablename__ = "journey_cohort"
    __table_args__ = (UniqueConstraint("claim_key", name="uq_journey_cohort_claim"),)
    workspace_id: int = Field(primary_key=True)
    journey_id: str = Field(max_length=100, primary_key=True)
    cohort: int = Field(primary_key=True)
    version: int
    claim_key: str = Field(max_length=255)
    workflow_id: str = Field(max_length=255)
    size: int
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    # entries admission turned away, by reason (already_in_journey, entry_limit, min_interval, entry_filter)
    refused: Optional[dict[str, int]] = Field(default=None, sa_column=Column(JSON, nullable=True))


class JourneyTrigger(SQLModel, table=True):
    __tablename__ = "journey_trigger"
    workspace_id: int = Field(primary_key=True)
    event_name: str = Field(max_length=255, primary_key=True)
    journey_id: str = Field(max_length=100, primary_key=True)
    role: str = Field(max_length=8, primary_key=True)  # entry | goal
    segment_id: Optional[str] = Field(default=None, max_length=100)  # segment_entry: only this segment's enters
    within_ms: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class JourneyEntry(SQLModel, table=True):
    __tablename__ = "journey_entry"
    __table_args__ = (Index("ix_journey_entry_journey", "workspace_id", "journey_id", "id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int
    journey_id: str = Field(max_length=100)
    user_pk: int
    event: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    enqueued_at: int = Field(sa_column=Column(BigInteger, nullable=False))


journeys = Journey.__table__
journey_versions = JourneyVersion.__table__
class JourneyStepTally(SQLModel, table=True):
    """What tidings.engine.journeys.counts.step_counts counts from the runs, kept at write time by triggers
    on journey_run (migration 0020_pagefast_step_tally): per version and step, runs that `entered` it,
    runs `waiting` on it (active) or `ended` on it, and each `outcome` it recorded (its count of entries).
    Sharded by writer on PostgreSQL (backend pid * 16 + a random sub-shard, counted once per statement:
    migration 0022_step_tally_per_statement; concurrent transactions never write one row); only the sum
    over shards means anything. counts.fold_step_tally folds
    the shards of backends that have gone into shard 0."""

    __tablename__ = "journey_step_tally"
    workspace_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    journey_id: str = Field(sa_column=Column(String(100), primary_key=True))
    version: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    kind: str = Field(sa_column=Column(String(16), primary_key=True))  # entered | waiting | ended | outcome
    step: str = Field(sa_column=Column(Text, primary_key=True))
    outcome: str = Field(sa_column=Column(Text, primary_key=True))  # '' but for kind outcome
    shard: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    runs: int = Field(sa_column=Column(BigInteger, nullable=False))


journey_runs = JourneyRun.__table__
journey_cohorts = JourneyCohort.__table__
journey_triggers = JourneyTrigger.__table__
journey_entries = JourneyEntry.__table__
journey_step_tallies = JourneyStepTally.__table__
