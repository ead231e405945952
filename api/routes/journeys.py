"""Journeys: the same YAML as in git, put and validated over HTTP; lifecycle calls reach Temporal."""
from __future__ import annotations

import asyncio

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.params import Parameter
from sqlalchemy import Engine

from tidings.engine.analytics.journey_report import JourneyReport, journey_report
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.journeys import store
from tidings.engine.journeys.store import JourneyInfo, RunInfo, ValidationResult
from tidings.engine.workspaces.service import WorkspaceRef

from tidings.api.params import Int64, OptionalInt64



class PutResult(msgspec.Struct):
    journey: JourneyInfo
    new_version: bool


async def _text(request: Request) -> str:
    """The raw body: Litestar would parse a JSON body, and YAML is not JSON."""
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the journey must be UTF-8 text (YAML or JSON)", field="body") from None


ACTIONS = ("activate", "pause", "resume", "stop")


class JourneyController(Controller):
    """Bodies are the raw `kind: Journey` document, YAML or JSON (JSON is YAML too), any content type."""

    path = "/journeys"

    @put("/{journey_id:str}")
    async def put_journey(self, request: Request, db: Engine, workspace: WorkspaceRef, journey_id: str) -> PutResult:
        return await asyncio.to_thread(self._put, db, workspace, journey_id, await _text(request))

    @staticmethod
    def _put(db: Engine, workspace: WorkspaceRef, journey_id: str, text: str) -> PutResult:
        info, created = store.put_journey(db, workspace, text, path=f"journey {journey_id}", expected_id=journey_id)
        return PutResult(journey=info, new_version=created)

    @post("/validate", status_code=200)
    async def validate(self, request: Request, db: Engine, workspace: WorkspaceRef) -> ValidationResult:
        return await asyncio.to_thread(store.validate_journey, db, workspace, await _text(request))

    @get("/", sync_to_thread=True)
    def list_journeys(self, db: Engine, workspace: WorkspaceRef) -> list[JourneyInfo]:
        return store.list_journeys(db, workspace)

    @get("/{journey_id:str}", sync_to_thread=True)
    def get_journey(self, db: Engine, workspace: WorkspaceRef, journey_id: str) -> JourneyInfo:
        return store.get_journey(db, workspace, journey_id)

    @get("/{journey_id:str}/runs", sync_to_thread=True)
    def runs(self, db: Engine, workspace: WorkspaceRef, journey_id: str, user_id: str | None = None,
             limit: Int64 = 100) -> list[RunInfo]:
        store.get_journey(db, workspace, journey_id)  # 404 for a journey that does not exist
        return store.list_runs(db, workspace, journey_id, user_id=user_id, limit=min(max(limit, 1), 1000))

    @get("/{journey_id:str}/report", sync_to_thread=True)
    def report(self, db: Engine, workspace: WorkspaceRef, journey_id: str, version: OptionalInt64 = None) -> JourneyReport:
        """The funnel (entered, sent per send step, goal reached), counts per step, channel and variant, the
        holdout's share and the lift against it, and why customers were not sent to or not admitted."""
        return journey_report(db, workspace, journey_id, version)

    @post("/{journey_id:str}/{action:str}", status_code=200)
    async def lifecycle(self, request: Request, db: Engine, workspace: WorkspaceRef, journey_id: str,
                        action: str = Parameter(schema_extra={"enum": list(ACTIONS)})) -> JourneyInfo:
        handlers = {name: getattr(store, name) for name in ACTIONS}
        if action not in handlers:
            raise InvalidInput(f"unknown action {action!r}; use one of {', '.join(handlers)}", field="action")
        await asyncio.to_thread(store.get_journey, db, workspace, journey_id)  # 404 before reaching Temporal
        client = await request.app.state.temporal.client()
        kwargs = request.app.state.settings.journey_queues() if action == "activate" else {}
        return await handlers[action](client, db, workspace, journey_id, **kwargs)
