"""Analytics: event streams and their dead letters.

Schema changes go through Alembic migrations (engine/platform/migrations), never create_all.
Timestamps are epoch milliseconds (BigInteger) so comparisons are the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Integer, Text, UniqueConstraint
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


class MessageFact(SQLModel, table=True):
    """A message event (`_email.send`, `_sms.delivered`, ...) with the attributes the metrics group by as
    plain columns: what the console's overview and journey page count, through covering indexes, without
    reading or parsing the events' JSON. Written by the database itself, by triggers on `event` (insert and
    delete; migration 0019_consolescale_message_facts), so it holds exactly the message events there are,
    in the same transaction, whichever code (or bulk SQL) wrote them. Attribute values are text as `->>`
    gives them ('true', '1'); `transactional` is the attribute being JSON true."""

    __tablename__ = "message_fact"
    __table_args__ = (
        # a journey's metrics: its events by name and group, with the customer, message and time
        Index("ix_message_fact_journey", "workspace_id", "journey_id", "name", "step_id", "variant", "channel",
              "user_pk", "message_key", "ts", "journey_version"),
        # the workspace's metrics over a time range (the overview)
        Index("ix_message_fact_time", "workspace_id", "ts", "name", "channel", "transactional", "user_pk",
              "message_key"),
    )
    event_pk: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    workspace_id: int = Field(sa_column=Column(Integer, nullable=False))
    name: str = Field(max_length=255)
    ts: int = Field(sa_column=Column(BigInteger, nullable=False))
    user_pk: int = Field(sa_column=Column(Integer, nullable=False))
    message_id: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    journey_id: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    journey_version: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    step_id: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    variant: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    channel: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    transactional: bool = Field(sa_column=Column(Boolean, nullable=False))
    # the message id's MessageKey (None without a message id), set by the insert trigger (migration
    # 0021_tally_message_keys): what the metrics count distinct messages over, an integer not the text
    message_key: Optional[int] = Field(default=None, sa_column=Column(Integer, nullable=True))


class MessageKey(SQLModel, table=True):
    """An integer per (workspace, message id), given by the message-fact insert trigger to the first event
    of a message (an upsert on the unique pair, so concurrent writers of one message agree on it). Kept
    when the message's facts are pruned: a later event of that message gets the same key."""

    __tablename__ = "message_key"
    __table_args__ = (UniqueConstraint("workspace_id", "message_id", name="uq_message_key_message"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    workspace_id: int = Field(sa_column=Column(Integer, nullable=False))
    message_id: str = Field(sa_column=Column(Text, nullable=False))


event_streams = EventStream.__table__
message_facts = MessageFact.__table__
message_keys = MessageKey.__table__
pinpoint_event_streams = PinpointEventStream.__table__
dead_letters = DeadLetter.__table__
