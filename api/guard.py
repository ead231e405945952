"""The outermost ASGI layer: a request id on every answer, and a bound on the work the API has in flight.

Past its capacity the API used to accept everything and queue it (requests waited 47-71 s at twice the
capacity). Here a request beyond `TIDINGS_API_MAX_IN_FLIGHT` concurrent ones is answered at once with 503 and
`Retry-After`, before it is authenticated or its body read, so the requests that were accepted keep their
latency. Not counted: /health, /ready and /metrics (a probe or a scrape must answer when the API is busiest),
the live event stream (long-lived by design), and what people and providers
send that nobody would send again: tracking (an opened mail, a click, an RFC 8058 one-click unsubscribe that a
mailbox provider does not retry) and provider feedback. Each of those is one small indexed write.

Every answer is also counted here (tidings.engine.platform.metrics_registry: by method, route template and status,
with its duration) and, at INFO, logged with its request id: this layer sees the 404s no route matched and
the 503s it refused itself, which a route middleware would not.
"""
from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from urllib.parse import parse_qsl
from typing import Any, Callable

import msgspec

from tidings.engine.platform.log_format import REQUEST_ID
from tidings.engine.platform.metrics_registry import HTTP_DURATION, HTTP_REQUESTS

REQUEST_ID_KEY = "tidings.request_id"
_UNCOUNTED = ("/health", "/ready", "/metrics", "/v1/events/stream", "/t/", "/feedback/")
# The route label of an answer no route produced (no route matched, or refused before routing).
UNROUTED = "unrouted"
log = logging.getLogger("tidings.http")
# A caller (or a proxy in front) may send its own id; anything else is replaced, never echoed as given.
_CALLER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_of(scope: Any) -> str | None:
    return scope.get(REQUEST_ID_KEY) if isinstance(scope, dict) else None


def _incoming_id(scope: dict) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _CALLER_ID.fullmatch(text) else None
    return None


class RequestGuard:
    """Wraps an ASGI app: sets `scope[REQUEST_ID_KEY]`, adds `X-Request-Id` to every response, and refuses
    counted requests past `max_in_flight` (0 = no bound)."""

    def __init__(self, app: Callable, max_in_flight: int, retry_after_seconds: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after = str(max(1, retry_after_seconds)).encode()
        self.in_flight = 0  # only touched on the event loop: no lock needed

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope[REQUEST_ID_KEY] = request_id
        token = REQUEST_ID.set(request_id)
        id_header = (b"x-request-id", request_id.encode())
        status = [500]  # what the client gets if the app fails before answering (the server's own 500)

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), id_header]
                status[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_with_id, request_id)
        finally:
            REQUEST_ID.reset(token)
            _account(scope, request_id, status[0], time.perf_counter() - started)

    async def _guarded(self, scope: dict, receive: Callable, send_with_id: Callable, request_id: str) -> None:
        nul_field = _nul_in_url(scope)
        if nul_field is not None:
            await _answer(send_with_id, 400, {"code": "invalid", "field": nul_field, "request_id": request_id,
                                              "message": "text may not contain NUL (%00) characters"})
            return
        if not self.max_in_flight or scope["path"].startswith(_UNCOUNTED):
            await self.app(scope, receive, send_with_id)
            return
        if self.in_flight >= self.max_in_flight:
            await self._refuse(send_with_id, request_id)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.in_flight -= 1

    async def _refuse(self, send: Callable, request_id: str) -> None:
        await _answer(send, 503, {
            "code": "overloaded", "field": None, "request_id": request_id,
            "message": f"the API has {self.max_in_flight} requests in flight, its limit; retry after "
                       f"{self.retry_after.decode()} s"}, [(b"retry-after", self.retry_after)])


# Any other method a client sends is counted as "other": a label per made-up method would grow without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


@functools.cache  # bounded: methods above x route templates x statuses
def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_DURATION.labels(method, route)


def _account(scope: dict, request_id: str, status: int, seconds: float) -> None:
    """Count the answer under its route template (`/v1/users/{user_id}`): raw paths carry ids, and a label
    per id would grow without bound."""
    method = scope.get("method", "")
    method, route = method if method in _METHODS else "other", scope.get("path_template") or UNROUTED
    requests, duration = _series(method, route, status)
    requests.inc()
    duration.observe(seconds)
    if log.isEnabledFor(logging.INFO):
        log.info("%s %s %s", method, route, status,
                 extra={"request_id": request_id, "method": method, "route": route, "status": status,
                        "duration_ms": round(seconds * 1000, 2)})


async def _answer(send: Callable, status: int, error: dict, headers: list | None = None) -> None:
    body = msgspec.json.encode({"error": error})
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or ())]})
    await send({"type": "http.response.body", "body": body})


def _nul_in_url(scope: dict) -> str | None:
    """A NUL in the path or the query string (`%00`) reaches SQL as text PostgreSQL cannot hold (a 500);
    refused for every route alike: "path", or the name of the query parameter."""
    if "\x00" in scope["path"]:
        return "path"
    query = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return name.replace("\x00", "") or "query"
        return "query"
    return None


# Paths whose bodies are streamed (spooled to disk) rather than read whole: they check their own rows.
_STREAMED = ("/v1/segments/import",)


async def refuse_nul_characters(request: Any) -> None:
    """A JSON string may spell a NUL character (`\\u0000`); PostgreSQL text and JSONB cannot hold one (a 500
    there, stored on SQLite). Refused for every body alike, naming the field, before any handler runs."""
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS") or request.scope["path"].startswith(_STREAMED):
        return
    if request.content_type[0] == "multipart/form-data":
        return  # an upload (the console's import): its parser has read the stream, and its rows check themselves
    body = await request.body()  # what Litestar decodes next: read once, cached
    if b"\\u0000" not in body:
        return
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return  # not JSON (a journey's YAML, a provider's form): its own parser answers
    path = _nul_path(value)
    if path is not None:
        from tidings.engine.platform.errors import InvalidInput

        raise InvalidInput("text may not contain NUL (\\u0000) characters", field=path or "body")


def _nul_path(value: Any) -> str | None:
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path
        elif isinstance(node, dict):
            for k, v in node.items():
                here = f"{path}.{k}" if path else str(k)
                if "\x00" in k:
                    return here
                stack.append((v, here))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
    return None
