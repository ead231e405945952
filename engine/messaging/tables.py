"""Messaging: templates, messages, the outbox, idempotent requests, the message index (send events by our id and
the provider's), tracking secrets.

Schema changes go through Alembic migrations (engine/platform/migrations), never create_all.
Timestamps are epoch milliseconds (BigInteger) so comparisons are the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

import tidings.engine.workspaces.tables  # noqa: F401  (its tables are named by the foreign keys below)


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
    # retrying: when the next attempt is due (epoch ms) and the rendered message (tidings.engine.messaging.redelivery resends it)
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


class TemplateVersion(SQLModel, table=True):
    """Every version of a template (Pinpoint numbers them 1, 2, 3 ...). The template's row holds the active
    version's document (what sends render); a native save of a changed template adds a version and makes it
    active, Pinpoint's UpdateXTemplate may overwrite the latest or add one without activating it."""

    __tablename__ = "message_template_version"
    __table_args__ = (UniqueConstraint("workspace_id", "template_id", "version",
                                       name="uq_message_template_version"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    template_id: str = Field(max_length=255)
    version: int
    doc: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    description: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


stored_templates = StoredTemplate.__table__
template_versions = TemplateVersion.__table__
messages = Message.__table__
outbox_messages = OutboxMessage.__table__
idempotent_requests = IdempotentRequest.__table__


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


message_refs = MessageRef.__table__
tracking_secrets = TrackingSecret.__table__
