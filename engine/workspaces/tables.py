"""Workspaces and their API keys.

Schema changes go through Alembic migrations (engine/platform/migrations), never create_all.
Timestamps are epoch milliseconds (BigInteger) so comparisons are the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, Text
from sqlmodel import Field, SQLModel


class Workspace(SQLModel, table=True):
    __tablename__ = "workspace"
    # Ids are never reused (migration 0017_workspace_ids): Temporal workflow ids carry them, and a deleted
    # workspace's finished workflows would refuse a new workspace's journeys of the same id.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=100)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id", index=True)
    prefix: str = Field(max_length=16, index=True)
    key_hash: str = Field(max_length=64, unique=True)
    label: str = Field(default="", max_length=100)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    revoked_at: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class WorkspaceRetention(SQLModel, table=True):
    """How long a workspace keeps what grows without bound, in days (None: the default,
    tidings.engine.ops.retention.DEFAULT_DAYS). What is still read is kept regardless (docs/production.md)."""

    __tablename__ = "workspace_retention"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    events_days: Optional[int] = None
    message_events_days: Optional[int] = None
    journey_runs_days: Optional[int] = None
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


workspaces = Workspace.__table__
workspace_retention = WorkspaceRetention.__table__
api_keys = ApiKey.__table__


class AccessKey(SQLModel, table=True):
    """An AWS-style key pair for the Pinpoint-compatible API (api/pinpoint): the secret must be known to
    verify a SigV4 signature, so it is stored sealed (tidings.engine.channels.secrets), never hashed nor plain.
    A workspace's key has its workspace_id; an admin key has none and reaches every workspace."""

    __tablename__ = "access_key"
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: Optional[int] = Field(default=None, foreign_key="workspace.id", index=True)  # None: admin
    access_key_id: str = Field(max_length=32, unique=True)
    sealed_secret: str = Field(sa_column=Column(Text, nullable=False))
    admin: bool = False  # reaches every workspace, and may create them (CreateApp)
    label: str = Field(default="", max_length=100)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    revoked_at: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))


access_keys = AccessKey.__table__


class ResourceTag(SQLModel, table=True):
    """The tags of one resource of a workspace (Pinpoint's TagResource and the `tags` of its create bodies):
    `resource` is "app", "segments/<id>" or "templates/<name>/<TYPE>" (tidings.engine.workspaces.tags)."""

    __tablename__ = "resource_tag"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    resource: str = Field(max_length=400, primary_key=True)
    tags: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


resource_tags = ResourceTag.__table__
