"""Analytics: event streams and their dead letters.

Schema changes go through Alembic migrations (engine/platform/migrations), never create_all.
Timestamps are epoch milliseconds (BigInteger) so comparisons are the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Integer, SmallInteger, String, Text, UniqueConstraint
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
              "user_pk", "message_id", "ts", "journey_version"),
        # the workspace's metrics over a time range (the overview)
        Index("ix_message_fact_time", "workspace_id", "ts", "name", "channel", "transactional", "user_pk",
              "message_id"),
        # the journey tally's triggers: does another fact of this customer / message remain in the group
        Index("ix_message_fact_journey_user", "workspace_id", "journey_id", "user_pk"),
        Index("ix_message_fact_journey_message", "workspace_id", "journey_id", "message_id"),
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


class MessageMetric(SQLModel, table=True):
    """Which metric (sent, delivered, bounced, ...) each message event name counts for: what the journey
    tally's triggers group by (migration 0020_pagefast_journey_tallies; the names of
    tidings.engine.analytics.metrics.METRICS)."""

    __tablename__ = "message_metric"
    name: str = Field(sa_column=Column(String(255), primary_key=True))
    metric: str = Field(sa_column=Column(String(32), nullable=False))


class JourneyMessageTally(SQLModel, table=True):
    """A journey's message counts kept at write time by triggers on message_fact (migration
    0020_pagefast_journey_tallies): per metric and grouping (`grouped_by`: 0 step x variant x channel, 1 the
    journey, 2 step, 3 variant, 4 channel), events, distinct customers and distinct message ids, and the
    first and last time. Key columns hold chr(1) for NULL and for a column the grouping does not use. Rows
    are sharded by writer (PostgreSQL backend pid % 16) so that concurrent writers do not queue on one row:
    only the sum over shards is meaningful. `bounds_exact` goes false when a deleted fact may have been the group's
    first or last (the times then bound the facts, no longer exactly)."""

    __tablename__ = "journey_message_tally"
    workspace_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    journey_id: str = Field(sa_column=Column(Text, primary_key=True))
    grouped_by: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    metric: str = Field(sa_column=Column(String(32), primary_key=True))
    step_key: str = Field(sa_column=Column(Text, primary_key=True))
    variant_key: str = Field(sa_column=Column(Text, primary_key=True))
    channel_key: str = Field(sa_column=Column(Text, primary_key=True))
    shard: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    events: int = Field(sa_column=Column(BigInteger, nullable=False))
    customers: int = Field(sa_column=Column(BigInteger, nullable=False))
    messages: int = Field(sa_column=Column(BigInteger, nullable=False))
    min_ts: int = Field(sa_column=Column(BigInteger, nullable=False))
    max_ts: int = Field(sa_column=Column(BigInteger, nullable=False))
    bounds_exact: bool = Field(sa_column=Column(Boolean, nullable=False))


event_streams = EventStream.__table__
message_facts = MessageFact.__table__
pinpoint_event_streams = PinpointEventStream.__table__
dead_letters = DeadLetter.__table__
journey_message_tallies = JourneyMessageTally.__table__
