"""Customer events: ingest a batch, page through them."""
from __future__ import annotations

from litestar import Controller, get, post
from sqlalchemy import Engine

from tidings.api.params import CURSOR, LIMIT, SINCE, UNTIL
from tidings.engine.customers import events
from tidings.engine.customers.schemas import EventsBatch, EventsResult, Page
from tidings.engine.workspaces.service import WorkspaceRef



class EventController(Controller):
    path = "/events"

    @post("/", status_code=202, sync_to_thread=True)
    def ingest(self, db: Engine, workspace: WorkspaceRef, data: EventsBatch) -> EventsResult:
        return events.ingest(db, workspace, data.events)

    @get("/", sync_to_thread=True)
    def list_events(self, db: Engine, workspace: WorkspaceRef, user_id: str | None = None, name: str | None = None,
                    since: str | None = SINCE, until: str | None = UNTIL, cursor: str | None = CURSOR,
                    limit: int = LIMIT) -> Page:
        return events.list_events(db, workspace, user_id=user_id, name=name, since=since, until=until,
                                  cursor=cursor, limit=limit)
