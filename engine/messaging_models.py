"""Tables of the messaging side: channel configuration, templates, messages, the outbox, rate buckets.

Schema changes go through Alembic (migration 0003_messaging); the models only describe the tables.
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


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
    # sealed like the secret settings in `config` (engine.channel_secrets).
    feedback_secret: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class ChannelRoute(SQLModel, table=True):
    """Which configured channel serves an endpoint channel type; the primary key makes it one per type."""

    __tablename__ = "channel_route"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    channel_type: str = Field(max_length=16, primary_key=True)
    name: str = Field(max_length=64)


class StoredTemplate(SQLModel, table=True):
    __tablename__ = "message_template"
    __table_args__ = (UniqueConstraint("workspace_id", "template_id", name="uq_message_template_workspace_id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    template_id: str = Field(max_length=255)
    channel_type: str = Field(max_length=16)
    doc: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    version: int = 1
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class Message(SQLModel, table=True):
    """One message to one address. The unique key is the idempotency guarantee: a retried send step or
    a replayed API request finds its earlier row and never sends again."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key", "endpoint", name="uq_message_idempotency"),
        Index("ix_message_workspace_created", "workspace_id", "created_at"),
        Index("ix_message_retry_due", "status", "next_attempt_at"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    message_id: str = Field(max_length=64, unique=True)
    idempotency_key: str = Field(max_length=512)
    endpoint: str = Field(max_length=512)  # endpoint id, or "to:<address>" for a raw address
    user_pk: Optional[int] = Field(default=None)
    endpoint_pk: Optional[int] = Field(default=None)
    channel: str = Field(max_length=64)
    channel_type: str = Field(max_length=16)
    address: str = Field(max_length=4096)
    template_id: Optional[str] = Field(default=None, max_length=255)
    journey_id: Optional[str] = Field(default=None, max_length=255)
    journey_version: Optional[int] = None
    step_id: Optional[str] = Field(default=None, max_length=255)
    variant: Optional[str] = Field(default=None, max_length=255)
    transactional: bool = False
    status: str = Field(max_length=16)  # queued | retrying | sent | failed
    error: Optional[str] = Field(default=None, max_length=2000)  # the last error (also while retrying)
    permanent: Optional[bool] = None
    attempts: int = 0
    provider_message_id: Optional[str] = Field(default=None, max_length=512)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    # retrying: when the next attempt is due (epoch ms) and the rendered message (engine.redelivery resends it)
    next_attempt_at: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    content: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON, nullable=True))
    owner: Optional[str] = Field(default=None, max_length=64)  # the send attempt allowed to hand it over


class OutboxMessage(SQLModel, table=True):
    """What the outbox channel "delivered": the rendered message, kept for development and tests."""

    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_workspace_address", "workspace_id", "address"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    message_id: str = Field(max_length=64, unique=True)
    channel_type: str = Field(max_length=16)
    address: str = Field(max_length=4096)
    content: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class IdempotentRequest(SQLModel, table=True):
    """An API request made with an Idempotency-Key: its body's hash and, once done, its answer."""

    __tablename__ = "idempotent_request"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    key: str = Field(max_length=255, primary_key=True)
    body_hash: str = Field(max_length=64)
    answer: Optional[Any] = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


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
stored_templates = StoredTemplate.__table__
messages = Message.__table__
outbox_messages = OutboxMessage.__table__
idempotent_requests = IdempotentRequest.__table__
rate_buckets = RateBucket.__table__
