"""Helpers for message-event tests: sends recorded as messaging records them, real local servers."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest

from tidings.engine.customers import on_write as changes
from tidings.engine.customers.events import record
from tidings.engine.customers.schemas import EventIn
from tidings.engine.workspaces.service import WorkspaceRef, ensure_workspace
from tidings.engine.ops.devstack import free_port  # noqa: F401  (tests import it from here)
from tests.conftest import Api
from tests.loopback import HttpServer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
T0_MS = int(T0.timestamp() * 1000)


def ws_of(db, name: str = "acme") -> WorkspaceRef:
    return ensure_workspace(db, name)


def send_event(message_id: str, *, endpoint_id: str, channel: str = "email", ts_ms: int = T0_MS,
               provider_message_id: str | None = None, journey: tuple[str, int, str] | None = None,
               variant: str | None = None, transactional: bool = False, goal: dict | None = None,
               name_type: str = "send") -> EventIn:
    """A `_{channel}.send` event as messaging records it."""
    attrs: dict[str, Any] = {"message_id": message_id, "channel": channel, "endpoint_id": endpoint_id,
                             "template_id": "welcome"}
    if journey:
        attrs.update(journey_id=journey[0], journey_version=journey[1], step_id=journey[2])
        if variant:
            attrs["variant"] = variant
    if transactional:
        attrs["transactional"] = True
    if goal:
        attrs["goal"] = goal
    if provider_message_id:
        attrs["provider_message_id"] = provider_message_id
    return EventIn(name=f"_{channel}.{name_type}", id=f"{message_id}:{name_type}", endpoint_id=endpoint_id,
                   timestamp=datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc), attributes=attrs)


def record_events(db, workspace: WorkspaceRef, batch: list[EventIn]) -> None:
    with db.begin() as conn:
        _, rows, _ = record(conn, workspace.id, batch)
        changes.events_recorded(conn, workspace.id, rows)


def events_named(api, name: str) -> list[dict]:
    return api.get("/v1/events", params={"name": name, "limit": 1000}).json()["items"]


@pytest.fixture
def receiver():
    """Start webhook receivers: `statuses` are answered in turn, then 200."""
    made: list[HttpServer] = []

    def start(statuses: list[int] | None = None) -> HttpServer:
        queue = list(statuses or [])
        r = HttpServer(lambda _req: (queue.pop(0) if queue else 200, {})).start()
        r.url += "/hook"
        made.append(r)
        return r

    yield start
    for r in made:
        r.stop()





@dataclass
class Manual:
    """An app whose stream loop is off: tests drive `runner.tick()` themselves."""

    api: Any
    other: Any
    db: Any
    runner: Any


@pytest.fixture
def manual(settings):
    import dataclasses

    from litestar.testing import TestClient

    from tidings.api.app import create_app
    from tidings.api.routes.message_events import plugins_of
    from tidings.engine.analytics.streams import StreamRunner
    from tidings.engine.workspaces.service import create_key

    app = create_app(dataclasses.replace(settings, stream_worker=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        db = c.app.state.db
        _, key = create_key(db, "acme")
        _, other = create_key(db, "globex")
        runner = StreamRunner(db, plugins_of(c.app), backoff_base_ms=1, backoff_max_ms=5)
        yield Manual(Api(c, key), Api(c, other), db, runner)
