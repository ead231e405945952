"""Helpers for message-event tests: sends recorded as messaging records them, real local servers."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from engine import changes
from engine.events import record
from engine.schemas import EventIn
from engine.workspaces import WorkspaceRef, ensure_workspace
from engine.devstack import free_port  # noqa: F401  (tests import it from here)
from tests.conftest import Api

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


def record_events(db, ws: WorkspaceRef, batch: list[EventIn]) -> None:
    with db.begin() as conn:
        _, rows, _ = record(conn, ws.id, batch)
        changes.events_recorded(conn, ws.id, rows)


def events_named(api, name: str) -> list[dict]:
    return api.get("/v1/events", params={"name": name, "limit": 1000}).json()["items"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 in a thread; `statuses` are answered in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    url: str = ""

    def start(self) -> "Receiver":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.statuses.pop(0) if outer.statuses else 200
                data = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def start(statuses: list[int] | None = None) -> Receiver:
        r = Receiver(list(statuses or [])).start()
        made.append(r)
        return r

    yield start
    for r in made:
        r.stop()



def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


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

    from api.app import create_app
    from api.routes.message_events import plugins_of
    from engine.streams import StreamRunner
    from engine.workspaces import create_key

    app = create_app(dataclasses.replace(settings, stream_worker=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        db = c.app.state.db
        _, key = create_key(db, "acme")
        _, other = create_key(db, "globex")
        runner = StreamRunner(db, plugins_of(c.app), backoff_base_ms=1, backoff_max_ms=5)
        yield Manual(Api(c, key), Api(c, other), db, runner)
