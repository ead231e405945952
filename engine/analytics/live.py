"""The live event stream (GET /v1/events/stream): where a client starts, and the messages it is sent.

A stream starts now, after `?after=`, or after the id a reconnecting EventSource sends as Last-Event-ID; it
then polls the event table and yields what matches its filters, a keep-alive comment when idle, and ends
within seconds of its key no longer being valid (`key_live`, re-checked every KEY_RECHECK_SECONDS).
"""
from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
from sqlalchemy import Engine

from tidings.engine.analytics import streams as st
from tidings.engine.analytics.stream_records import FORMATS
from tidings.engine.platform.limits import check_int64
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.workspaces.service import WorkspaceRef

# An open stream re-checks its key this often: a revoked key stops delivering within these seconds. One
# indexed read per open stream per period (what every request costs once).
KEY_RECHECK_SECONDS = 2.0
KEEP_ALIVE_SECONDS = 15.0
PAGE = 500


@dataclass(frozen=True)
class LiveMessage:
    """One Server-Sent Events message: an event (`data`, `id` = stream position) or a comment."""

    data: str | None = None
    id: int | None = None
    comment: str | None = None
    retry: int | None = None


def start_position(db: Engine, workspace: WorkspaceRef, last_event_id: str | None, after: int | None) -> int:
    if last_event_id:
        try:
            return check_int64(int(last_event_id), "Last-Event-ID")
        except (ValueError, InvalidInput):
            raise InvalidInput("Last-Event-ID must be an id this stream sent", field="Last-Event-ID") from None
    if after is not None:
        return after
    return st.last_event_pk(db, workspace.id)


async def open_stream(db: Engine, workspace: WorkspaceRef, *, format: str, types: list[str], channels: list[str],
                      journey_ids: list[str], last_event_id: str | None, after: int | None, poll_seconds: float,
                      key_live: Callable[[], bool]) -> AsyncIterator[LiveMessage]:
    """Check the request (a bad format or Last-Event-ID is refused here, before the response starts) and
    return the stream's messages."""
    if format not in FORMATS:
        raise InvalidInput(f"format is one of {', '.join(FORMATS)}", field="format")
    position = await anyio.to_thread.run_sync(lambda: start_position(db, workspace, last_event_id, after))
    matches = st.Matcher({"event_types": types, "channels": channels, "journey_ids": journey_ids})
    return _messages(db, workspace, position, matches, FORMATS[format], poll_seconds, key_live)


async def _messages(db: Engine, workspace: WorkspaceRef, position: int, matches: st.Matcher, to_record,
                    poll_seconds: float, key_live: Callable[[], bool]) -> AsyncIterator[LiveMessage]:
    idle = 0.0
    recheck_at = time.monotonic() + KEY_RECHECK_SECONDS
    yield LiveMessage(comment="tidings event stream", retry=2000)
    while True:
        if time.monotonic() >= recheck_at:
            if not await anyio.to_thread.run_sync(key_live):
                # the stream ends; a reconnecting EventSource gets 401 and stops
                yield LiveMessage(comment="API key revoked: stream closed")
                return
            recheck_at = time.monotonic() + KEY_RECHECK_SECONDS
        rows = await anyio.to_thread.run_sync(functools.partial(st.read_events, db, workspace.id, position, PAGE))
        for r in rows:
            position = r.id
            if matches(r.name, r.attributes or {}):
                yield LiveMessage(data=json.dumps(to_record(r, workspace.name), separators=(",", ":")), id=r.id)
        if rows:
            idle = 0.0
            continue
        await asyncio.sleep(poll_seconds)
        idle += poll_seconds
        if idle >= KEEP_ALIVE_SECONDS:
            idle = 0.0
            yield LiveMessage(comment="keep-alive")
