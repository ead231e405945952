"""Channels: stored channel configuration (secrets sealed by tidings.engine.channels.secrets), routes, rate buckets.

Schema changes go through Alembic migrations (engine/platform/migrations), never create_all.
Timestamps are epoch milliseconds (BigInteger) so comparisons are the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, Float, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

import tidings.engine.workspaces.tables  # noqa: F401  (its tables are named by the foreign keys below)


class ChannelConfig(SQLModel, table=True):
    """A workspace's settings for one plugin channel (secrets included: never returned, never logged)."""

    __tablename__ = "channel_config"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_channel_config_workspace_name"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    name: str = Field(max_length=64)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    rate_limit: Optional[float] = Field(default=None, sa_column=Column(Float, nullable=True))
    # Shared secret of Tidings' generic feedback format (channels without parse_feedback of their own),
    # sealed like the secret settings in `config` (tidings.engine.channels.secrets).
    feedback_secret: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class ChannelRoute(SQLModel, table=True):
    """Which configured channel serves an endpoint channel type; the primary key makes it one per type."""

    __tablename__ = "channel_route"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    channel_type: str = Field(max_length=16, primary_key=True)
    name: str = Field(max_length=64)


class RateBucket(SQLModel, table=True):
    """Token bucket of one provider account. workspace_id 0 is the environment's default channels,
    which every workspace shares (one SMTP relay, one account)."""

    __tablename__ = "rate_bucket"
    workspace_id: int = Field(primary_key=True)
    channel: str = Field(max_length=64, primary_key=True)
    tokens: float = Field(sa_column=Column(Float, nullable=False))
    updated_at: float = Field(sa_column=Column(Float, nullable=False))  # seconds (wall clock)


channel_configs = ChannelConfig.__table__
channel_routes = ChannelRoute.__table__
rate_buckets = RateBucket.__table__
