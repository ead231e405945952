"""Tables of the message-events work: the message index, tracking secrets, feedback settings,
event streams and their dead letters. Created by migration 0005_events."""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class MessageRef(SQLModel, table=True):
    """One row per `_{channel}.send` event: how feedback, tracking and unsubscribe find a message's
    identity (customer, endpoint, journey, step, variant) from our id or the provider's id.
    Filled from `changes.events_recorded`, so it never depends on the messaging tables."""

    __tablename__ = "message_ref"
    __table_args__ = (
        UniqueConstraint("workspace_id", "message_id", name="uq_message_ref_message"),
        Index("ix_message_ref_provider", "workspace_id", "provider_message_id"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    message_id: str = Field(max_length=255)
    provider_message_id: Optional[str] = Field(default=None, max_length=255)
    channel: str = Field(max_length=16)
    user_pk: int
    endpoint_pk: Optional[int] = None
    identity: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sent_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class TrackingSecret(SQLModel, table=True):
    """Per-workspace HMAC key for tracking links (unless TIDINGS_SECRET_KEY derives them)."""

    __tablename__ = "tracking_secret"
    workspace_id: int = Field(foreign_key="workspace.id", primary_key=True)
    secret: str = Field(max_length=128)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


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


message_refs = MessageRef.__table__
tracking_secrets = TrackingSecret.__table__
event_streams = EventStream.__table__
dead_letters = DeadLetter.__table__
