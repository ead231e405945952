"""Event streams: configured sinks fed by a delivery loop, and the reader behind the live SSE stream.

Delivery (StreamRunner, an asyncio task in the API's lifespan; `tidings streams run` runs it alone):
each stream keeps a cursor (the last event row id it has handled). A pass reads the events after the
cursor in id order, filters them, turns them into records and hands one batch to the sink. The cursor
moves only after the sink returned (at least once); a failure leaves it and schedules the next attempt
with exponential backoff; after `max_attempts` failures the batch goes to the dead-letter table and the
stream moves on. Batches of one stream are strictly sequential, so records reach the sink in event
order, and so in order per customer. Several processes can run the loop: a stream is leased (lease
column) to one of them at a time.
"""
from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
import re
import types
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from sqlalchemy import Connection, Engine, delete, insert, or_, select, update

from tidings.engine.channels import secrets as channel_secrets
from tidings.engine.channels.contract import ChannelConfigError, redact_config, resolve_config, secret_keys
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.retry import backoff
from tidings.engine.platform.db import reading, writing
from tidings.engine.platform.metrics_registry import EVENT_STREAM_DEAD_LETTERS, EVENT_STREAM_LAG
from tidings.engine.platform.errors import InvalidInput, NotFound
from tidings.engine.analytics.tables import dead_letters, event_streams, pinpoint_event_streams
from tidings.engine.messaging.ledger import parse_name
from tidings.engine.customers import history
from tidings.engine.customers.tables import endpoints, events, users
from tidings.engine.workspaces.tables import workspaces
from tidings.engine.analytics.stream_records import FORMATS
from tidings.engine.customers.schemas import Body
from tidings.engine.workspaces.service import WorkspaceRef

log = logging.getLogger("tidings.streams")

StreamId = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class StreamFilter(Body):
    """Which events a stream carries; empty lists mean "all". `event_types` are glob patterns over
    event names (`_email.*`, `_*.click`, `purchase`); `channels` and `journey_ids` apply to message events."""

    event_types: list[str] = []
    channels: list[str] = []
    journey_ids: list[str] = []


class StreamIn(Body):
    kind: Annotated[str, Meta(min_length=1, max_length=64)]
    config: dict[str, Any] = {}
    filter: StreamFilter = msgspec.field(default_factory=StreamFilter)
    format: Literal["tidings", "pinpoint"] = "tidings"
    enabled: bool = True
    batch_size: Annotated[int, Meta(ge=1, le=1000)] = 100
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 8
    start: Literal["now", "beginning"] = "now"  # where a new stream starts reading


class StreamOut(msgspec.Struct):
    id: str
    kind: str
    config: dict[str, Any]
    filter: dict[str, Any]
    format: str
    enabled: bool
    batch_size: int
    max_attempts: int
    position: int
    delivered: int
    failures: int
    last_error: str | None
    dead_letters: int


# ---- filtering and reading ---------------------------------------------------------------------------


class Matcher:
    def __init__(self, flt: dict[str, Any]):
        self.patterns = list(flt.get("event_types") or [])
        self.channels = {c.lower() for c in flt.get("channels") or []}
        self.journeys = {str(j) for j in flt.get("journey_ids") or []}

    def __call__(self, name: str, attributes: dict[str, Any]) -> bool:
        if self.patterns and not any(fnmatch.fnmatchcase(name, p) for p in self.patterns):
            return False
        if self.channels or self.journeys:
            parsed = parse_name(name)
            if self.channels and (parsed is None or parsed[0] not in self.channels):
                return False
            if self.journeys and str(attributes.get("journey_id")) not in self.journeys:
                return False
        return True


def read_events(db: Engine, workspace_id: int, after: int, limit: int) -> list[Any]:
    """Events after position `after`, in id order. Ids of one workspace commit in order
    (tidings.engine.customers.history.lock_event_order), so a reader that moves past an id never misses a smaller one.
    Segment events stored one row per customer and write are expanded, each at its own position
    (engine/customers/history.py)."""
    q = (
        select(events.c.id, events.c.event_id, events.c.name, events.c.ts, events.c.received_at, events.c.attributes,
               events.c.metrics, users.c.user_id, endpoints.c.endpoint_id, endpoints.c.address, endpoints.c.opt_out)
        .join(users, users.c.id == events.c.user_pk)
        .outerjoin(endpoints, endpoints.c.id == events.c.endpoint_pk)
        .where(events.c.workspace_id == workspace_id)
        .order_by(events.c.id)
    )
    with reading(db) as conn:
        return history.read_page(lambda position, n: conn.execute(q.where(events.c.id > position).limit(n)).all(),
                                 after, limit)


def last_event_pk(db: Engine, workspace_id: int) -> int:
    with reading(db) as conn:
        q = select(events.c.id).where(events.c.workspace_id == workspace_id).order_by(events.c.id.desc()).limit(1)
        return conn.execute(q).scalar() or 0


# ---- configuration -----------------------------------------------------------------------------------


def _shim(kind: str, factory: Any) -> Any:
    return types.SimpleNamespace(name=kind, config_fields=tuple(getattr(factory, "config_fields", ())))


def _factory(plugins: Any, kind: str) -> Any:
    try:
        return plugins.event_sink_factories[kind]
    except KeyError:
        known = ", ".join(sorted(plugins.event_sink_factories)) or "none"
        raise InvalidInput(f"unknown sink kind {kind!r} (available: {known})", field="kind") from None


def build_sink(factory: Any, stream_id: str, config: Mapping[str, Any], workspace: WorkspaceRef) -> Any:
    """A sink from its factory. A factory whose call takes ``workspace`` gets the stream's workspace (the
    ndjson sink keeps each workspace in its own folder); older factories are called as before."""
    try:
        takes_workspace = "workspace" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_workspace = False
    return factory(stream_id, config, workspace=workspace) if takes_workspace else factory(stream_id, config)


_STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def put_stream(db: Engine, plugins: Any, workspace: WorkspaceRef, stream_id: str, data: StreamIn) -> tuple[StreamOut, bool]:
    if not _STREAM_ID.fullmatch(stream_id):
        raise InvalidInput("stream ids are 1-100 letters, digits, '.', '_' or '-'", field="id")
    factory = _factory(plugins, data.kind)
    try:
        config = resolve_config(_shim(data.kind, factory), data.config)
        build_sink(factory, stream_id, config, workspace)  # a sink that cannot be built is refused now, not at delivery
    except ChannelConfigError as exc:
        raise InvalidInput(str(exc), field="config") from None
    # Secret sink settings are sealed at rest like channel secrets (refused without an encryption key).
    stored = channel_secrets.seal_config(stream_id, secret_keys(_shim(data.kind, factory)), data.config,
                                         kind="event stream")
    now = now_ms()
    values = {
        "kind": data.kind, "config": stored, "filter": msgspec.to_builtins(data.filter), "format": data.format,
        "enabled": data.enabled, "batch_size": data.batch_size, "max_attempts": data.max_attempts, "updated_at": now,
    }
    with writing(db) as conn:
        row = conn.execute(select(event_streams.c.id).where(
            event_streams.c.workspace_id == workspace.id, event_streams.c.stream_id == stream_id)).first()
        created = row is None
        if created:
            cursor = 0 if data.start == "beginning" else (conn.execute(
                select(events.c.id).where(events.c.workspace_id == workspace.id).order_by(events.c.id.desc()).limit(1)
            ).scalar() or 0)
            conn.execute(insert(event_streams).values(
                workspace_id=workspace.id, stream_id=stream_id, cursor=cursor, failures=0, next_attempt_at=0, delivered=0,
                lease_until=0, created_at=now, **values))
        else:
            conn.execute(update(event_streams).where(event_streams.c.id == row.id).values(
                failures=0, next_attempt_at=0, last_error=None, **values))
    return get_stream(db, plugins, workspace, stream_id), created


def reseal_streams(db: Engine, plugins: Any, resealer: channel_secrets.Resealer) -> None:
    """Sink settings are sealed like channel secrets: re-seal them (channel_secrets.reseal_all's `also`),
    one transaction per stream, written only if nothing changed the row meanwhile."""
    report = resealer.report
    with reading(db) as conn:
        streams = conn.execute(select(event_streams.c.id, event_streams.c.stream_id, event_streams.c.kind,
                                      event_streams.c.config, event_streams.c.updated_at, workspaces.c.name.label("workspace"))
                               .join(workspaces, workspaces.c.id == event_streams.c.workspace_id)).all()
    factories = getattr(plugins, "event_sink_factories", {}) if plugins is not None else {}
    for row in streams:
        factory = factories.get(row.kind)
        secrets = frozenset(f.name for f in getattr(factory, "config_fields", ()) if f.secret)
        if factory is None and any(not channel_secrets.is_sealed(v) for v in row.config.values()):
            report.unknown_plugin.append(f"{row.ws}/event stream {row.stream_id}")
        try:
            config = resealer.config(row.stream_id, row.config, secrets, row.workspace, "event stream")
        except channel_secrets.SecretUnreadable as exc:
            report.unreadable.append(str(exc))
            continue
        if config is not None:
            with writing(db) as conn:  # updated_at kept: the delivery loop goes on with the sink it built
                conn.execute(update(event_streams).where(
                    event_streams.c.id == row.id, event_streams.c.updated_at == row.updated_at).values(config=config))


def _out(row: Any, plugins: Any, n_dead: int) -> StreamOut:
    factory = plugins.event_sink_factories.get(row.kind)
    config = redact_config(_shim(row.kind, factory), row.config) if factory else {k: "***" for k in row.config}
    return StreamOut(id=row.stream_id, kind=row.kind, config=config, filter=row.filter, format=row.format,
                     enabled=row.enabled, batch_size=row.batch_size, max_attempts=row.max_attempts,
                     position=row.cursor, delivered=row.delivered, failures=row.failures, last_error=row.last_error,
                     dead_letters=n_dead)


def _row(conn: Connection, workspace: WorkspaceRef, stream_id: str) -> Any:
    row = conn.execute(select(event_streams).where(
        event_streams.c.workspace_id == workspace.id, event_streams.c.stream_id == stream_id)).first()
    if row is None:
        raise NotFound(f"no event stream {stream_id!r}", field="id")
    return row


def _dead_count(conn: Connection, stream_pk: int) -> int:
    from sqlalchemy import func

    return conn.execute(select(func.count()).select_from(dead_letters).where(dead_letters.c.stream_pk == stream_pk)).scalar()


def get_stream(db: Engine, plugins: Any, workspace: WorkspaceRef, stream_id: str) -> StreamOut:
    with reading(db) as conn:
        row = _row(conn, workspace, stream_id)
        return _out(row, plugins, _dead_count(conn, row.id))


def list_streams(db: Engine, plugins: Any, workspace: WorkspaceRef) -> list[StreamOut]:
    with reading(db) as conn:
        rows = conn.execute(select(event_streams).where(event_streams.c.workspace_id == workspace.id)
                            .order_by(event_streams.c.stream_id)).all()
        return [_out(r, plugins, _dead_count(conn, r.id)) for r in rows]


def delete_stream(db: Engine, workspace: WorkspaceRef, stream_id: str) -> None:
    """Delete a stream, its dead letters, and the Pinpoint event stream that named it (if any)."""
    with writing(db) as conn:
        row = _row(conn, workspace, stream_id)
        conn.execute(delete(pinpoint_event_streams).where(pinpoint_event_streams.c.stream_pk == row.id))
        conn.execute(delete(dead_letters).where(dead_letters.c.stream_pk == row.id))
        conn.execute(delete(event_streams).where(event_streams.c.id == row.id))


def list_dead_letters(db: Engine, workspace: WorkspaceRef, stream_id: str, limit: int = 100) -> list[dict[str, Any]]:
    with reading(db) as conn:
        row = _row(conn, workspace, stream_id)
        q = select(dead_letters).where(dead_letters.c.stream_pk == row.id).order_by(dead_letters.c.id).limit(limit)
        return [{"id": r.id, "first_position": r.first_event_pk, "last_position": r.last_event_pk,
                 "attempts": r.attempts, "error": r.error, "records": r.records, "created_at": r.created_at}
                for r in conn.execute(q)]


# ---- a Pinpoint application's event stream (api/pinpoint/event_stream.py) ------------------------------------


class PinpointStream(msgspec.Struct):
    stream_id: str  # the native stream it names
    destination_arn: str
    role_arn: str
    updated_at: int


def put_pinpoint_stream(db: Engine, workspace: WorkspaceRef, stream_id: str, destination_arn: str,
                        role_arn: str) -> PinpointStream:
    """Make the native stream `stream_id` the workspace's Pinpoint event stream: it is enabled and emits
    Pinpoint's record shape. A stream it replaces is disabled (one destination per application, as in
    Pinpoint). InvalidInput (field DestinationStreamArn) when no such native stream is configured."""
    now = now_ms()
    with writing(db) as conn:
        row = conn.execute(select(event_streams.c.id).where(
            event_streams.c.workspace_id == workspace.id, event_streams.c.stream_id == stream_id)).first()
        if row is None:
            raise InvalidInput(f"no event stream {stream_id!r} is configured in this workspace (create it first: "
                               f"PUT /v1/event-streams/{stream_id}, docs/events.md)", field="DestinationStreamArn")
        old = conn.execute(select(pinpoint_event_streams.c.stream_pk).where(
            pinpoint_event_streams.c.workspace_id == workspace.id)).scalar()
        if old is not None and old != row.id:
            conn.execute(update(event_streams).where(event_streams.c.id == old).values(enabled=False, updated_at=now))
        conn.execute(update(event_streams).where(event_streams.c.id == row.id).values(
            format="pinpoint", enabled=True, updated_at=now))
        values = {"stream_pk": row.id, "destination_arn": destination_arn, "role_arn": role_arn, "updated_at": now}
        if old is None:
            conn.execute(insert(pinpoint_event_streams).values(workspace_id=workspace.id, **values))
        else:
            conn.execute(update(pinpoint_event_streams).where(pinpoint_event_streams.c.workspace_id == workspace.id)
                         .values(**values))
    return PinpointStream(stream_id=stream_id, destination_arn=destination_arn, role_arn=role_arn, updated_at=now)


def _pinpoint_row(conn: Connection, workspace: WorkspaceRef) -> Any:
    row = conn.execute(select(pinpoint_event_streams, event_streams.c.stream_id)
                       .join(event_streams, event_streams.c.id == pinpoint_event_streams.c.stream_pk)
                       .where(pinpoint_event_streams.c.workspace_id == workspace.id)).first()
    if row is None:
        raise NotFound("this application has no event stream", field="ApplicationId")
    return row


def get_pinpoint_stream(db: Engine, workspace: WorkspaceRef) -> PinpointStream:
    with reading(db) as conn:
        row = _pinpoint_row(conn, workspace)
    return PinpointStream(stream_id=row.stream_id, destination_arn=row.destination_arn, role_arn=row.role_arn,
                          updated_at=row.updated_at)


def delete_pinpoint_stream(db: Engine, workspace: WorkspaceRef) -> PinpointStream:
    """Stop streaming: the native stream is disabled (it stays configured, with its position: PUT it with
    `enabled: true`, or PutEventStream again, to resume) and the application has no event stream."""
    with writing(db) as conn:
        row = _pinpoint_row(conn, workspace)
        conn.execute(update(event_streams).where(event_streams.c.id == row.stream_pk).values(
            enabled=False, updated_at=now_ms()))
        conn.execute(delete(pinpoint_event_streams).where(pinpoint_event_streams.c.workspace_id == workspace.id))
    return PinpointStream(stream_id=row.stream_id, destination_arn=row.destination_arn, role_arn=row.role_arn,
                          updated_at=row.updated_at)


# ---- delivery -----------------------------------------------------------------------------------------


def backoff_ms(failures: int, base_ms: int = 1000, max_ms: int = 300_000) -> int:
    """Exponential backoff with jitter: about base * 2^(failures-1), capped."""
    return int(backoff(failures, base_ms, max_ms))


class RunnerSlot:
    """A lease-owner name that outlives its process: slot n of this host and state folder, held by an
    exclusive flock on `<home>/stream-runner-<n>.lock` (the lowest free n). Two live runners never share a
    slot; a runner that died lets its slot go with its process, and the next one to start takes it, so it
    owns the dead runner's leases at once and resumes its streams from their cursors, instead of waiting
    for the leases to run out (`lease_ms`, a minute)."""

    def __init__(self, home: Path):
        import fcntl
        import hashlib
        import socket

        home.mkdir(parents=True, exist_ok=True)
        place = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]
        for n in range(1024):
            f = open(home / f"stream-runner-{n}.lock", "a+b")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self._file = f  # the lock lives as long as this object
            self.owner = f"{socket.gethostname()[:40]}:{place}:{n}"
            return
        raise RuntimeError(f"no free stream-runner slot under {home}")

    def close(self) -> None:
        self._file.close()


class StreamRunner:
    """Delivers every enabled stream of every workspace. `tick()` does one pass; `run()` loops.
    `slot` (a RunnerSlot) names the runner so that the next start of a dead one takes its leases over."""

    def __init__(self, db: Engine, plugins: Callable[[], Any] | Any, *, poll_seconds: float = 0.25,
                 lease_ms: int = 60_000, backoff_base_ms: int = 1000, backoff_max_ms: int = 300_000,
                 max_batches_per_tick: int = 50, slot: RunnerSlot | None = None):
        self.db = db
        self._plugins = plugins
        self._slot = slot
        self.owner = slot.owner if slot is not None else uuid.uuid4().hex[:16]
        self.poll_seconds = poll_seconds
        self.lease_ms = lease_ms
        self.backoff_base_ms = backoff_base_ms
        self.backoff_max_ms = backoff_max_ms
        self.max_batches_per_tick = max_batches_per_tick
        self._sinks: dict[int, tuple[int, Any]] = {}
        self.wakeup = asyncio.Event()

    @property
    def plugins(self) -> Any:
        """`plugins` is the plugin manager or a function returning it (built lazily)."""
        if hasattr(self._plugins, "event_sink_factories"):
            return self._plugins
        return self._plugins()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                busy = await self.tick()
            except Exception:  # a broken database or plugin must not kill the loop
                log.exception("event stream pass failed")
                busy = 0
            if busy:
                continue
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=self.poll_seconds)
            except asyncio.TimeoutError:
                pass
            self.wakeup.clear()
        await self.close()

    async def close(self) -> None:
        for _, sink in self._sinks.values():
            closer = getattr(sink, "aclose", None)
            if closer:
                try:
                    await closer()
                except Exception:
                    pass
        self._sinks.clear()
        await asyncio.to_thread(self._release)
        if self._slot is not None:
            self._slot.close()

    def _release(self) -> None:
        with writing(self.db) as conn:
            conn.execute(update(event_streams).where(event_streams.c.lease_owner == self.owner)
                         .values(lease_owner=None, lease_until=0))

    def _due(self) -> list[Any]:
        now = now_ms()
        with reading(self.db) as conn:
            return conn.execute(
                select(event_streams, workspaces.c.name.label("workspace"))
                .join(workspaces, workspaces.c.id == event_streams.c.workspace_id)
                .where(event_streams.c.enabled.is_(True), event_streams.c.next_attempt_at <= now,
                       or_(event_streams.c.lease_owner.is_(None), event_streams.c.lease_owner == self.owner,
                           event_streams.c.lease_until < now))
            ).all()

    def _claim(self, stream_pk: int) -> bool:
        now = now_ms()
        with writing(self.db) as conn:
            return conn.execute(
                update(event_streams)
                .where(event_streams.c.id == stream_pk,
                       or_(event_streams.c.lease_owner.is_(None), event_streams.c.lease_owner == self.owner,
                           event_streams.c.lease_until < now))
                .values(lease_owner=self.owner, lease_until=now + self.lease_ms)
            ).rowcount == 1

    async def tick(self) -> int:
        """One pass over the due streams; returns how many events were handled (0 = idle)."""
        due = await asyncio.to_thread(self._due)
        results = await asyncio.gather(*(self._serve(s) for s in due))
        return sum(results)

    def _sink(self, stream: Any) -> Any:
        cached = self._sinks.get(stream.id)
        if cached and cached[0] == stream.updated_at:
            return cached[1]
        factory = _factory(self.plugins, stream.kind)
        config = channel_secrets.open_config(stream.stream_id, stream.config, kind="event stream")
        sink = build_sink(factory, stream.stream_id, resolve_config(_shim(stream.kind, factory), config),
                          WorkspaceRef(stream.workspace_id, stream.workspace))
        self._sinks[stream.id] = (stream.updated_at, sink)
        return sink

    async def _serve(self, stream: Any) -> int:
        if not await asyncio.to_thread(self._claim, stream.id):
            return 0
        handled = 0
        cursor, failures, updated_at = stream.cursor, stream.failures, stream.updated_at
        to_record = FORMATS[stream.format]
        matches = Matcher(stream.filter or {})
        for _ in range(self.max_batches_per_tick):
            rows = await asyncio.to_thread(read_events, self.db, stream.workspace_id, cursor, stream.batch_size)
            if not rows:
                break
            last = rows[-1].id
            records = [to_record(r, stream.workspace) for r in rows if matches(r.name, r.attributes or {})]
            if records:
                try:
                    sink = self._sink(stream)
                    await sink.deliver(records)
                except Exception as exc:
                    failures += 1
                    error = f"{type(exc).__name__}: {exc}"[:2000]
                    dead = failures >= stream.max_attempts
                    await asyncio.to_thread(self._failed, stream, cursor, last, records, failures, error, dead,
                                            updated_at)
                    if not dead:
                        return handled
                    cursor, failures = last, 0
                    handled += len(rows)
                    continue
            ok = await asyncio.to_thread(self._advance, stream, cursor, last, len(records), updated_at)
            if not ok:  # reconfigured or taken over meanwhile: stop; the next pass starts from the table
                return handled
            if records:
                EVENT_STREAM_LAG.labels(stream.kind).observe(max(0, now_ms() - rows[0].received_at) / 1000)
            cursor, failures = last, 0
            handled += len(rows)
        return handled

    def _advance(self, stream: Any, old_cursor: int, new_cursor: int, n: int, updated_at: int) -> bool:
        with writing(self.db) as conn:
            return conn.execute(
                update(event_streams)
                .where(event_streams.c.id == stream.id, event_streams.c.cursor == old_cursor,
                       event_streams.c.updated_at == updated_at, event_streams.c.lease_owner == self.owner)
                .values(cursor=new_cursor, delivered=event_streams.c.delivered + n, failures=0, last_error=None,
                        next_attempt_at=0, lease_until=now_ms() + self.lease_ms)
            ).rowcount == 1

    def _failed(self, stream: Any, cursor: int, last: int, records: list, failures: int, error: str, dead: bool,
                updated_at: int) -> None:
        now = now_ms()
        with writing(self.db) as conn:
            where = (event_streams.c.id == stream.id, event_streams.c.cursor == cursor,
                     event_streams.c.updated_at == updated_at)
            if dead:
                moved = conn.execute(update(event_streams).where(*where).values(
                    cursor=last, failures=0, next_attempt_at=0, last_error=error)).rowcount
                if moved:
                    EVENT_STREAM_DEAD_LETTERS.labels(stream.kind).inc()
                    conn.execute(insert(dead_letters).values(
                        workspace_id=stream.workspace_id, stream_pk=stream.id, first_event_pk=cursor + 1,
                        last_event_pk=last, records=records, error=error, attempts=failures, created_at=now))
                log.warning("stream %s: batch up to %s dead-lettered after %s attempts: %s",
                            stream.stream_id, last, failures, error)
            else:
                conn.execute(update(event_streams).where(*where).values(
                    failures=failures, last_error=error,
                    next_attempt_at=now + backoff_ms(failures, self.backoff_base_ms, self.backoff_max_ms)))
