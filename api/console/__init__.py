"""The web console at /console: server-rendered pages over the engine functions the JSON API calls.

On unless TIDINGS_CONSOLE=off. Pages live in tidings.api.console.pages, sign-in and CSRF in tidings.api.console.session,
the journey drawing in tidings.api.console.graph; templates and the vendored htmx (with its licence) beside them."""
from __future__ import annotations

import os
from pathlib import Path

from litestar import Request, Response, Router
from litestar.di import Provide
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from tidings.api.console.pages import ConsoleController, SignInController
from tidings.api.console.render import page
from tidings.api.console.session import (
    PREFIX,
    SignInNeeded,
    csrf_config,
    secret,
    session_middleware,
    signed_in_workspace,
)
from tidings.engine.platform.config import Settings
from tidings.engine.platform.errors import InvalidInput, NotFound, TidingsError

STATIC = Path(__file__).parent / "static"


def enabled() -> bool:
    return os.environ.get("TIDINGS_CONSOLE", "on").strip().lower() not in ("off", "0", "false", "no")


def _sign_in(request: Request, _exc: Exception) -> Response:
    if request.headers.get("hx-request"):  # an htmx fragment: the whole page goes to sign-in
        return Response("", status_code=401, headers={"HX-Redirect": PREFIX + "/sign-in"})
    return Redirect(PREFIX + "/sign-in")


def _not_found(request: Request, exc: Exception) -> Response:
    # Another workspace's ids are looked up in this one's data only: they are not found, like any typo.
    return page(request, "message.html", status_code=404, title="Not found",
                text=str(exc) or "Nothing here in this workspace.")


def _refused(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    if isinstance(exc, PermissionDeniedException):
        text = "This form was not sent from the console (its CSRF token is missing or wrong). Reload the page and try again."
    else:
        text = str(exc.detail if isinstance(exc, HTTPException) else exc)
    return page(request, "message.html", status_code=status, title="Refused", text=text)


def console_routes(settings: Settings) -> list:
    """The /console router and its static files; none when the console is turned off."""
    if not enabled():
        return []
    key = secret(settings)
    pages = Router(
        path=PREFIX,
        route_handlers=[SignInController, ConsoleController],
        middleware=[session_middleware(key), DefineMiddleware(CSRFMiddleware, config=csrf_config(key))],
        dependencies={"workspace": Provide(signed_in_workspace, sync_to_thread=True)},
        exception_handlers={SignInNeeded: _sign_in, NotAuthorizedException: _sign_in, NotFound: _not_found,
                            InvalidInput: _refused, TidingsError: _refused, HTTPException: _refused},
        include_in_schema=False,
    )
    static = create_static_files_router(path=PREFIX + "/static", directories=[STATIC], include_in_schema=False)
    return [pages, static]
