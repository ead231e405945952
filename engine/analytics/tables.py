"""Analytics: event streams and their dead letters.

Schema changes go through Alembic migrations (engine/platform/migrations), never create_all.
Timestamps are epoch milliseconds (BigInteger) so comparisons are the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

import tidings.engine.workspaces.tables  # noqa: F401  (its tables are named by the foreign keys below)


class EventStream(SQLModel, table=True):
    """A configured sink: where events go, which ones, in which shape, and how far delivery got."""

    __tablename__ = "event_stream"
    __table_args__ = (UniqueConstraint("workspace_id", "stream_id", name="uq_event_stream_workspace_stream"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    stream_id: str = Field(max_length=100)
    kind: str = Field(max_length=64)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    filter: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    format: str = Field(default="tidings", max_length=16)
    enabled: bool = True
    batch_size: int = 100
    max_attempts: int = 8
    cursor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    failures: int = 0
    next_attempt_at: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    delivered: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    lease_owner: Optional[str] = Field(default=None, max_length=64)
    lease_until: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class DeadLetter(SQLModel, table=True):
    """A batch a stream gave up on after `max_attempts` failures; the stream moved past it."""

    __tablename__ = "event_dead_letter"
    __table_args__ = (Index("ix_event_dead_letter_stream", "stream_pk", "id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    stream_pk: int = Field(foreign_key="event_stream.id")
    first_event_pk: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_event_pk: int = Field(sa_column=Column(BigInteger, nullable=False))
    records: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    error: str = Field(default="", sa_column=Column(Text, nullable=False))
    attempts: int = 0
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class PinpointEventStream(SQLModel, table=True):
    """A Pinpoint application's event stream (PutEventStream): the native stream its DestinationStreamArn
    names, and the ARNs as given."""

    __tablename__ = "pinpoint_event_stream"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    stream_pk: int = Field(foreign_key="event_stream.id")
    destination_arn: str = Field(max_length=600)
    role_arn: str = Field(max_length=600)
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


event_streams = EventStream.__table__
pinpoint_event_streams = PinpointEventStream.__table__
dead_letters = DeadLetter.__table__
