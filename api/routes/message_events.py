"""Message events over HTTP.

Outside /v1 (no workspace key; recipients and providers call these):
    POST     /feedback/{workspace}/{channel}   provider callbacks, checked with the channel's config
    GET      /t/o/{token}.gif                  open pixel
    GET      /t/c/{token}                      click redirect
    GET|POST /t/u/{token}                      unsubscribe (POST = RFC 8058 one-click)
Under /v1 (workspace key):
    PUT|GET|DELETE /v1/event-streams/{id}, GET /v1/event-streams, GET /v1/event-streams/{id}/dead-letters
    GET /v1/events/stream (Server-Sent Events, resumable with Last-Event-ID)
    GET /v1/journeys/{id}/metrics, GET /v1/journeys/{id}/funnel, GET /v1/metrics/messages
"""
from __future__ import annotations

import html
from typing import Any

import anyio
from litestar import Controller, MediaType, Request, Response, Router, delete, get, post, put
from litestar.params import Parameter
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage
from sqlalchemy import Engine

from tidings.api.params import CHANNEL, LIMIT, SINCE, UNTIL, WITHIN
from tidings.engine.messaging import feedback as fb
from tidings.engine.analytics import metrics as mx
from tidings.engine.analytics import streams as st
from tidings.engine.messaging import tracking
from tidings.engine.platform.clock import duration_seconds, iso_to_ms
from tidings.engine.platform.errors import InvalidInput, NotFound, Unauthorized
from tidings.engine.analytics import live
from tidings.engine.analytics.funnel import funnel_html
from tidings.engine.analytics.stream_records import FORMATS
from tidings.engine.workspaces.service import WorkspaceRef, authenticate

from tidings.api.params import OptionalInt64


def plugins_of(app: Any) -> Any:
    """The plugin manager the app loaded at start-up (built-in sinks come through the entry points)."""
    return app.state.plugins


def _client_ip(request: Request) -> str:
    fwd = request.headers.get("x-forwarded-for", "")
    if fwd:
        return fwd.split(",")[0].strip()
    return request.client.host if request.client else ""


def _secret_key(request: Request) -> str:
    return request.app.state.settings.secret_key


# ---- recipients and providers ------------------------------------------------------------------------

_NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, private", "Pragma": "no-cache"}


@get("/t/o/{token:str}", sync_to_thread=True)
def open_pixel(request: Request, token: str) -> Response:
    tracking.track_open(request.app.state.db, token.removesuffix(".gif"),  # InvalidToken: 404 (tidings.api.errors)
                        user_agent=request.headers.get("user-agent", ""), ip_address=_client_ip(request),
                        secret_key=_secret_key(request))
    return Response(content=tracking.PIXEL_GIF, media_type="image/gif", headers=_NO_STORE)


@get("/t/c/{token:str}", sync_to_thread=True)
def click(request: Request, token: str) -> Response:
    link = tracking.track_click(request.app.state.db, token, user_agent=request.headers.get("user-agent", ""),
                                ip_address=_client_ip(request), secret_key=_secret_key(request))
    return Redirect(path=link, status_code=302, headers=_NO_STORE)


def _page(title: str, body: str, status: int = 200) -> Response:
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
           f"<title>{html.escape(title)}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;"
           f"margin:4rem auto;padding:0 1rem;color:#222}}button{{font-size:1rem;padding:.6rem 1.2rem}}</style>"
           f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(content=doc, status_code=status, media_type=MediaType.HTML, headers=_NO_STORE)


@get("/t/u/{token:str}", sync_to_thread=True)
def unsubscribe_page(request: Request, token: str) -> Response:
    """A link scanner may fetch GET URLs: the page asks for one click, which POSTs."""
    try:
        tracking.check_unsubscribe(request.app.state.db, token, secret_key=_secret_key(request))
    except tracking.InvalidToken:
        return _page("Link not recognised", "<p>This unsubscribe link is not valid.</p>", 404)
    return _page("Unsubscribe", "<p>Stop receiving these messages at this address?</p>"
                 "<form method='post'><button type='submit'>Unsubscribe</button></form>")


@post("/t/u/{token:str}", status_code=200)
async def unsubscribe_post(request: Request, token: str) -> Response:
    body = (await request.body()).decode("utf-8", "replace")
    one_click = "List-Unsubscribe=One-Click" in body
    try:
        await anyio.to_thread.run_sync(lambda: tracking.unsubscribe(
            request.app.state.db, token, one_click=one_click, user_agent=request.headers.get("user-agent", ""),
            ip_address=_client_ip(request), secret_key=_secret_key(request)))
    except tracking.InvalidToken:
        return _page("Link not recognised", "<p>This unsubscribe link is not valid.</p>", 404)
    return _page("You are unsubscribed", "<p>You will not receive these messages at this address any more.</p>")


@post("/feedback/{workspace:str}/{channel:str}", status_code=200)
async def provider_feedback(request: Request, workspace: str, channel: str) -> fb.FeedbackResult:
    settings = request.app.state.settings
    body = await request.body()
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = settings.public_url + path if settings.public_url else str(request.url)
    return await anyio.to_thread.run_sync(lambda: fb.receive(
        request.app.state.db, plugins_of(request.app), workspace, channel, dict(request.headers), body, url))


public_router = Router(path="/", route_handlers=[open_pixel, click, unsubscribe_page, unsubscribe_post,
                                                 provider_feedback])


# ---- workspace API -------------------------------------------------------------------------------------


class EventStreamController(Controller):
    path = "/event-streams"

    @put("/{stream_id:str}", sync_to_thread=True)
    def put_stream(self, request: Request, db: Engine, workspace: WorkspaceRef, stream_id: str, data: st.StreamIn) -> Response:
        out, created = st.put_stream(db, plugins_of(request.app), workspace, stream_id, data)
        runner = getattr(request.app.state, "stream_runner", None)
        if runner is not None:
            runner.wakeup.set()
        return Response(content=out, status_code=201 if created else 200)

    @get("/", sync_to_thread=True)
    def list_streams(self, request: Request, db: Engine, workspace: WorkspaceRef) -> dict:
        return {"items": st.list_streams(db, plugins_of(request.app), workspace)}

    @get("/{stream_id:str}", sync_to_thread=True)
    def get_stream(self, request: Request, db: Engine, workspace: WorkspaceRef, stream_id: str) -> st.StreamOut:
        return st.get_stream(db, plugins_of(request.app), workspace, stream_id)

    @delete("/{stream_id:str}", sync_to_thread=True)
    def delete_stream(self, db: Engine, workspace: WorkspaceRef, stream_id: str) -> None:
        st.delete_stream(db, workspace, stream_id)

    @get("/{stream_id:str}/dead-letters", sync_to_thread=True)
    def dead_letters(self, db: Engine, workspace: WorkspaceRef, stream_id: str, limit: int = LIMIT) -> dict:
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000", field="limit")
        return {"items": st.list_dead_letters(db, workspace, stream_id, limit)}


def _key_still_live(db: Engine, authorization: str | None) -> bool:
    try:
        authenticate(db, authorization)
    except Unauthorized:
        return False
    return True


class LiveStreamController(Controller):
    path = "/events/stream"

    @get("/")
    async def live(self, request: Request, db: Engine, workspace: WorkspaceRef, type: list[str] | None = None,
                   channel: list[str] | None = None, journey_id: list[str] | None = None,
                   format: str = Parameter(default="tidings", schema_extra={"enum": list(FORMATS)}),
                   after: OptionalInt64 = None) -> ServerSentEvent:
        """Events as Server-Sent Events, `id:` = stream position. Starts at now, after `?after=`, or after
        the `Last-Event-ID` header (what browsers' EventSource sends when it reconnects). The stream ends
        within seconds of its key being revoked."""
        authorization = request.headers.get("authorization")
        messages = await live.open_stream(
            db, workspace, format=format, types=type or [], channels=channel or [], journey_ids=journey_id or [],
            last_event_id=request.headers.get("last-event-id"), after=after,
            poll_seconds=request.app.state.settings.stream_poll_seconds,
            key_live=lambda: _key_still_live(db, authorization))
        sse = (ServerSentEventMessage(data=m.data, id=m.id, comment=m.comment, retry=m.retry) async for m in messages)
        return ServerSentEvent(sse, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _ms(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    try:
        return iso_to_ms(value)
    except ValueError:
        raise InvalidInput(f"{field} must be ISO-8601, got {value!r}", field=field) from None


def _seconds(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return duration_seconds(value)
    except ValueError:
        raise InvalidInput(f"within is seconds or a duration like 90m, 12h, 7d; got {value!r}", field="within") from None


class MetricsController(Controller):
    path = "/"

    @get("/journeys/{journey_id:str}/metrics", sync_to_thread=True)
    def journey_metrics(self, db: Engine, workspace: WorkspaceRef, journey_id: str, version: OptionalInt64 = None,
                        goal: str | None = None, within: str | None = WITHIN, since: str | None = SINCE,
                        until: str | None = UNTIL) -> dict:
        return mx.journey_metrics(db, workspace, journey_id, version=version, goal=goal, within_seconds=_seconds(within),
                                  since_ms=_ms(since, "since"), until_ms=_ms(until, "until"))

    @get("/journeys/{journey_id:str}/funnel", sync_to_thread=True, media_type=MediaType.HTML)
    def journey_funnel(self, db: Engine, workspace: WorkspaceRef, journey_id: str, version: OptionalInt64 = None,
                       goal: str | None = None, within: str | None = WITHIN, since: str | None = SINCE,
                       until: str | None = UNTIL) -> str:
        m = mx.journey_metrics(db, workspace, journey_id, version=version, goal=goal, within_seconds=_seconds(within),
                               since_ms=_ms(since, "since"), until_ms=_ms(until, "until"))
        return funnel_html(m)

    @get("/metrics/messages", sync_to_thread=True)
    def message_metrics(self, db: Engine, workspace: WorkspaceRef, since: str | None = SINCE, until: str | None = UNTIL,
                        channel: str | None = CHANNEL) -> dict:
        return mx.message_metrics(db, workspace, since_ms=_ms(since, "since"), until_ms=_ms(until, "until"), channel=channel)


V1_CONTROLLERS = [EventStreamController, LiveStreamController, MetricsController]

__all__ = ["public_router", "V1_CONTROLLERS", "plugins_of", "NotFound"]
