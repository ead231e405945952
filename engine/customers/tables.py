"""Customers: users, their endpoints, their events, and the attribute names seen.

Customer documents keep their attributes and metrics as JSON on the row (what GET returns);
the segment engine adds its own typed indexes for fast rule evaluation.

Schema changes go through Alembic migrations (engine/platform/migrations), never create_all.
Timestamps are epoch milliseconds (BigInteger) so comparisons are the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

import tidings.engine.workspaces.tables  # noqa: F401  (its tables are named by the foreign keys below)


# The customers' documents: jsonb on PostgreSQL (parsed once on write, not at every `->` of the segment
# engine's reads: migration 0018), JSON text on SQLite.
DOCUMENT = JSON().with_variant(JSONB(), "postgresql")


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id", name="uq_users_workspace_user"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    user_id: str = Field(max_length=255)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(DOCUMENT, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(DOCUMENT, nullable=False))
    timezone: Optional[str] = Field(default=None, max_length=64)
    locale: Optional[str] = Field(default=None, max_length=35)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class Endpoint(SQLModel, table=True):
    __tablename__ = "endpoint"
    __table_args__ = (
        UniqueConstraint("workspace_id", "endpoint_id", name="uq_endpoint_workspace_endpoint"),
        Index("ix_endpoint_user", "user_pk"),
        # transactional sends and feedback find endpoints by address (a hash index on PostgreSQL: 4096 chars)
        Index("ix_endpoint_address", "address", postgresql_using="hash"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    endpoint_id: str = Field(max_length=255)
    user_pk: int = Field(foreign_key="users.id")
    channel: str = Field(max_length=16)
    address: str = Field(max_length=4096)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(DOCUMENT, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(DOCUMENT, nullable=False))
    opt_out: bool = False
    demographic: dict[str, Any] = Field(default_factory=dict, sa_column=Column(DOCUMENT, nullable=False))
    location: dict[str, Any] = Field(default_factory=dict, sa_column=Column(DOCUMENT, nullable=False))
    effective_date: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class Event(SQLModel, table=True):
    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("workspace_id", "event_id", name="uq_event_workspace_event"),
        Index("ix_event_user_name_ts", "user_pk", "name", "ts"),
        Index("ix_event_workspace_ts", "workspace_id", "ts"),
        Index("ix_event_workspace_name_ts", "workspace_id", "name", "ts"),  # message-event metrics by name
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    event_id: str = Field(max_length=255)
    user_pk: int = Field(foreign_key="users.id")
    endpoint_pk: Optional[int] = Field(default=None, foreign_key="endpoint.id")
    name: str = Field(max_length=255)
    ts: int = Field(sa_column=Column(BigInteger, nullable=False))
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    received_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class AttributeName(SQLModel, table=True):
    """Every custom attribute or metric name a workspace has used: enforces Pinpoint's 250-name
    limit and tells rule validation which `var` paths exist."""

    __tablename__ = "attribute_name"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    kind: str = Field(max_length=16, primary_key=True)  # attribute | metric
    name: str = Field(max_length=50, primary_key=True)


users = User.__table__
endpoints = Endpoint.__table__
events = Event.__table__
attribute_names = AttributeName.__table__
