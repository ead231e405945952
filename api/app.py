"""The Litestar application: resources opened in the lifespan, /v1 behind the workspace-key guard."""
from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response, Router, get
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig

from api.auth import current_workspace, database, require_workspace_key
from api.errors import HANDLERS
from api.openapi import allowed_methods, answer_options, complete as complete_openapi
from api.guard import RequestGuard, refuse_nul_characters
from api.pinpoint import pinpoint_mount
from api.routes.customers import EndpointController, UserController
from api.routes.events import EventController
from api.routes.journeys import JourneyController
from api.routes.message_events import V1_CONTROLLERS as EVENTS_V1, plugins_of, public_router
from api.routes.messaging import CONTROLLERS as MESSAGING_CONTROLLERS, plugin_manager
from api.routes.segments import ImportController, SegmentController
from api.temporal import TemporalHandle
from engine.channels import secrets as channel_secrets
from engine.channels.config import load_plugins
from engine.platform.config import Settings
from engine.platform.db import make_engine, migrate

V1_CONTROLLERS = [UserController, EndpointController, EventController, SegmentController, ImportController,
                  JourneyController, *MESSAGING_CONTROLLERS, *EVENTS_V1]


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


async def before_request(request: Request) -> Response | None:
    """Before every handler: a NUL character in a JSON body is refused (api.guard); OPTIONS lists every
    method of its path (api.openapi)."""
    await refuse_nul_characters(request)
    return answer_options(request)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar):
        app.state.settings = settings
        app.state.db = make_engine(settings.database_url)
        migrate(app.state.db)
        app.state.temporal = TemporalHandle(settings)
        app.state.plugins = load_plugins()  # a broken plugin stops start-up here, naming it
        # Unusable encryption keys stop start-up here; no key is said in the log (secrets are then refused).
        channel_secrets.announce(app.state.db, app.state.plugins)
        # Import jobs a dead API process left running are imported again (or failed with a reason), and its
        # abandoned uploads deleted.
        from engine.segments import jobs

        app.state.imports_dir = await asyncio.to_thread(jobs.imports_dir, settings.home)
        await asyncio.to_thread(jobs.recover, app.state.db, app.state.imports_dir)
        # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
        # which otherwise cost more than decoding a 10,000-item batch.
        gc.freeze()
        # A 10,000-item batch allocates ~100,000 short-lived objects: with the default threshold (700) the
        # collector runs hundreds of young passes per request for nothing, since they all die together.
        gc.set_threshold(50_000, 20, 20)
        stop, runner_task = asyncio.Event(), None
        if settings.stream_worker:
            from engine.analytics.streams import RunnerSlot, StreamRunner

            app.state.stream_runner = StreamRunner(app.state.db, lambda: plugins_of(app),
                                                   poll_seconds=settings.stream_poll_seconds,
                                                   slot=await asyncio.to_thread(RunnerSlot, settings.home))
            runner_task = asyncio.create_task(app.state.stream_runner.run(stop))
        try:
            yield
        finally:
            stop.set()
            # Import jobs in flight get the shutdown timeout; one still running then is imported again at the
            # next start (its upload is kept; its transaction, cut short, wrote nothing).
            left = await asyncio.to_thread(jobs.drain, settings.shutdown_timeout)
            if left:
                logging.getLogger("tidings.imports").warning(
                    "stopping with %d import job(s) unfinished; the next start imports them again", len(left))
            if runner_task is not None:
                app.state.stream_runner.wakeup.set()
                await runner_task
            from plugins.email_smtp import close_pools

            await close_pools()  # QUIT the pooled SMTP connections of this loop
            app.state.db.dispose()

    v1 = Router(
        path="/v1",
        route_handlers=V1_CONTROLLERS,
        guards=[require_workspace_key],
        dependencies={"ws": Provide(current_workspace, sync_to_thread=False)},
    )
    app = Litestar(
        route_handlers=[health, v1, public_router, pinpoint_mount],
        dependencies={"db": Provide(database, sync_to_thread=False),
                      "plugins": Provide(plugin_manager, sync_to_thread=False)},
        exception_handlers=HANDLERS,
        before_request=before_request,
        lifespan=[lifespan],
        # Litestar would otherwise turn the root logger to INFO and print every httpx request.
        logging_config=LoggingConfig(configure_root_logger=False),
        openapi_config=OpenAPIConfig(title="Tidings", version="0.1.0", path="/schema"),
    )
    complete_openapi(app.openapi_schema)  # built once, here: /schema serves this same object
    app.state.allowed_methods = allowed_methods(app)
    # Outside Litestar's own handler (not a route middleware): it must also see requests that match no route,
    # and refuse overload before routing, authentication or reading a body cost anything.
    app.asgi_handler = RequestGuard(app.asgi_handler, settings.api_max_in_flight, settings.api_retry_after_seconds)
    return app
