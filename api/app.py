"""The Litestar application: resources opened in the lifespan, /v1 behind the workspace-key guard."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response, Router, get
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig

from tidings.api.auth import current_workspace, database, require_workspace_key
from tidings.api.console import console_routes
from tidings.api.errors import HANDLERS
from tidings.api.openapi import allowed_methods, answer_options, complete as complete_openapi
from tidings.api.guard import RequestGuard, refuse_nul_characters
from tidings.api.pinpoint import pinpoint_mount
from tidings.api.routes.customers import EndpointController, UserController
from tidings.api.routes.events import EventController
from tidings.api.routes.journeys import JourneyController
from tidings.api.routes.message_events import V1_CONTROLLERS as EVENTS_V1, plugins_of, public_router
from tidings.api.routes.messaging import CONTROLLERS as MESSAGING_CONTROLLERS, plugin_manager
from tidings.api.routes.operations import metrics, ready
from tidings.api.routes.segments import ImportController, SegmentController
from tidings.api.temporal import TemporalHandle
from tidings.engine.analytics.streams import reseal_streams
from tidings.engine.channels import secrets as channel_secrets
from tidings.engine.channels.config import load_plugins
from tidings.engine.platform.collector import tune_collector
from tidings.engine.platform.config import Settings
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.wiring import wire

V1_CONTROLLERS = [UserController, EndpointController, EventController, SegmentController, ImportController,
                  JourneyController, *MESSAGING_CONTROLLERS, *EVENTS_V1]


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


async def before_request(request: Request) -> Response | None:
    """Before every handler: a NUL character in a JSON body is refused (tidings.api.guard); OPTIONS lists every
    method of its path (tidings.api.openapi)."""
    await refuse_nul_characters(request)
    return answer_options(request)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar):
        app.state.settings = settings
        wire()
        app.state.db = make_engine(settings.database_url)
        migrate(app.state.db)
        app.state.temporal = TemporalHandle(settings)
        app.state.plugins = load_plugins()  # a broken plugin stops start-up here, naming it
        # Unusable encryption keys stop start-up here; no key is said in the log (secrets are then refused).
        channel_secrets.announce(app.state.db, app.state.plugins, also=[reseal_streams])
        await app.state.plugins.startup(settings)
        # Import jobs a dead API process left running are imported again (or failed with a reason), and its
        # abandoned uploads deleted.
        # Pinpoint import and export jobs left pending are run again first (their files are then held).
        from tidings.engine.segments import jobs, pinpoint_jobs

        app.state.imports_dir = await asyncio.to_thread(jobs.imports_dir, settings.home)
        await asyncio.to_thread(pinpoint_jobs.recover, app.state.db, app.state.imports_dir)
        await asyncio.to_thread(jobs.recover, app.state.db, app.state.imports_dir)
        tune_collector()  # everything loaded so far lives as long as the process
        stop, runner_task = asyncio.Event(), None
        if settings.stream_worker:
            from tidings.engine.analytics.streams import RunnerSlot, StreamRunner

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
            await app.state.plugins.shutdown(settings)  # e.g. the SMTP plugin QUITs its pooled connections
            app.state.db.dispose()

    v1 = Router(
        path="/v1",
        route_handlers=V1_CONTROLLERS,
        guards=[require_workspace_key],
        dependencies={"workspace": Provide(current_workspace, sync_to_thread=False)},
    )
    app = Litestar(
        route_handlers=[health, ready, metrics, v1, public_router, pinpoint_mount, *console_routes(settings)],
        dependencies={"db": Provide(database, sync_to_thread=False),
                      "plugins": Provide(plugin_manager, sync_to_thread=False)},
        exception_handlers=HANDLERS,  # type: ignore[arg-type]  # handlers of subclasses of Exception
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
    app.asgi_handler = RequestGuard(  # type: ignore[assignment]  # an ASGI app in place of Litestar's
        app.asgi_handler, settings.api_max_in_flight, settings.api_retry_after_seconds)
    return app


def app_of_environment() -> Litestar:
    """The app of one process of `tidings api --workers N` (uvicorn starts each from this import string):
    the settings and the log format (TIDINGS_LOG_FORMAT) read from the environment, as `tidings api` does."""
    import os

    from tidings.engine.platform import log_format

    log_format.configure(os.environ)
    return create_app()
