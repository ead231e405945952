"""The Litestar application: resources opened in the lifespan, /v1 behind the workspace-key guard."""
from __future__ import annotations

import gc
from contextlib import asynccontextmanager

from litestar import Litestar, Router, get
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig

from api.auth import current_workspace, database, require_workspace_key
from api.errors import HANDLERS
from api.routes.customers import EndpointController, UserController
from api.routes.events import EventController
from api.routes.journeys import JourneyController
from api.temporal import TemporalHandle
from api.routes.segments import ImportController, SegmentController
from engine.config import Settings
from engine.db import make_engine, migrate

V1_CONTROLLERS = [UserController, EndpointController, EventController, SegmentController, ImportController,
                  JourneyController]


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar):
        app.state.settings = settings
        app.state.db = make_engine(settings.database_url)
        migrate(app.state.db)
        app.state.temporal = TemporalHandle(settings)
        # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
        # which otherwise cost more than decoding a 10,000-item batch.
        gc.freeze()
        try:
            yield
        finally:
            app.state.db.dispose()

    v1 = Router(
        path="/v1",
        route_handlers=V1_CONTROLLERS,
        guards=[require_workspace_key],
        dependencies={"ws": Provide(current_workspace, sync_to_thread=False)},
    )
    return Litestar(
        route_handlers=[health, v1],
        dependencies={"db": Provide(database, sync_to_thread=False)},
        exception_handlers=HANDLERS,
        lifespan=[lifespan],
        # Litestar would otherwise turn the root logger to INFO and print every httpx request.
        logging_config=LoggingConfig(configure_root_logger=False),
        openapi_config=OpenAPIConfig(title="Tidings", version="0.1.0", path="/schema"),
    )
