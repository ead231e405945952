"""Every error leaves the API as {"error": {"code", "message", "field"}}, mapped here once."""
from __future__ import annotations

import logging
from typing import Any
import re

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from sqlalchemy.exc import DataError

from tidings.api.guard import request_id_of
from tidings.engine.platform.errors import TidingsError
from tidings.engine.customers.limits import MAX_DEPTH
from tidings.engine.journeys.language.issues import JourneyCompileError

# msgspec's words for a body that is not JSON at all (as opposed to JSON of the wrong shape).
_MALFORMED = ("JSON is malformed", "Input data was truncated")
log = logging.getLogger("tidings.api")
_MSGSPEC_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`")


def _body(code: str, message: str, field: str | None = None, **extra) -> dict:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def tidings_error(_: Request, exc: TidingsError) -> Response:
    return Response(content={"error": exc.to_dict()}, status_code=exc.status, media_type=MediaType.JSON)


def validation_error(_: Request, exc: ValidationException) -> Response:
    """msgspec decode failures: name the field by its JSON path (`attributes.age`, `items[3].channel`)."""
    message, field = str(exc.detail), None
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict) and item.get("message"):
            message = item["message"]
            field = item.get("key")
            break
    unknown = re.search(r"unknown field `([^`]*)`", message)
    if unknown:
        field = unknown.group(1) if field in (None, "data") else f"{field}.{unknown.group(1)}"
    if field and message == repr(field):  # Litestar's words for a required part that is absent
        field, message = ("body", "a request body is required") if field == "data" else (
            field, f"{field} is required")
    match = _MSGSPEC_PATH.search(message)
    if match:
        field = match.group("path") or field
        message = message[: match.start()]
    return Response(content=_body("invalid", message, field), status_code=400, media_type=MediaType.JSON)


def http_error(_: Request, exc: HTTPException) -> Response:
    if str(exc.detail).startswith(_MALFORMED):
        return Response(content=_body("malformed_json", str(exc.detail)), status_code=400, media_type=MediaType.JSON)
    code = "not_found" if isinstance(exc, NotFoundException) else re.sub(r"\W+", "_", type(exc).__name__.lower())
    # Keep the exception's headers: a 405 must say `Allow`, a 429/503 `Retry-After`.
    if exc.status_code == 400 and _MSGSPEC_PATH.search(str(exc.detail)):  # msgspec refused a value ("Number out of range")
        code = "invalid"
    return Response(content=_body(code, str(exc.detail)), status_code=exc.status_code, media_type=MediaType.JSON,
                    headers=exc.headers)


def internal_error(request: Request, exc: Exception) -> Response:
    """Anything no other handler maps is a bug of ours: logged with its traceback under the request id that
    the answer (body and X-Request-Id header) carries, so an operator can find it from a caller's report."""
    request_id = request_id_of(request.scope)
    log.error("internal error answering %s %s (request %s)", request.method, request.url.path, request_id,
              exc_info=exc)
    return Response(content=_body("internal", f"internal error; see the server log for request {request_id}",
                                  request_id=request_id),
                    status_code=500, media_type=MediaType.JSON)


def not_utf8(_: Request, exc: UnicodeDecodeError) -> Response:
    """A body (or a part of one) that is not UTF-8: JSON must be, and so must everything we store."""
    return Response(content=_body("invalid_encoding", f"the body is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} "
                                  f"at offset {exc.start} is invalid", "body"),
                    status_code=400, media_type=MediaType.JSON)


def too_deep(request: Request, exc: RecursionError) -> Response:
    """A JSON body nested so deep that decoding it exhausted the stack (~1,000 levels): name where."""
    body = getattr(getattr(request, "_connection_state", None), "body", None)
    field = _deep_path(body, MAX_DEPTH) if isinstance(body, bytes) else None
    return Response(content=_body("limit_exceeded", f"the body nests more than {MAX_DEPTH} levels deep", field),
                    status_code=400, media_type=MediaType.JSON)


def _deep_path(body: bytes, limit: int, shown: int = 4) -> str | None:
    """The JSON path (`events[0].attributes`) to the first container deeper than `limit`, at most `shown`
    steps of it; a forgiving scan of the raw text, run only on this error path."""
    stack: list[list[Any]] = []  # [opening bracket, index of the current item or key]
    text, expect_key, i = body.decode("utf-8", "replace"), False, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if expect_key and stack and stack[-1][0] == "{":
                stack[-1][1] = text[i + 1:j]
            expect_key, i = False, j + 1
            continue
        if c in "{[":
            if len(stack) >= limit:
                steps = [f"[{k}]" if kind == "[" else f".{k}" for kind, k in stack[:shown] if k is not None]
                return "".join(steps).lstrip(".") or None
            stack.append([c, None if c == "{" else 0])
            expect_key = c == "{"
        elif c in "}]" and stack:
            stack.pop()
        elif c == "," and stack:
            if stack[-1][0] == "[":
                stack[-1][1] += 1
            else:
                expect_key = True
        i += 1
    return None


def database_refused(request: Request, exc: DataError) -> Response:
    """A value the database cannot hold that no check of ours caught first (a backstop: the checks name the
    field). The caller's input, so a 400; logged, because a check is missing."""
    request_id = request_id_of(request.scope)
    log.warning("database refused a value on %s %s (request %s): %s", request.method, request.url.path,
                request_id, exc.orig)
    first_line = str(exc.orig).splitlines()[0] if exc.orig else "a value is out of range"
    return Response(content=_body("invalid", f"the database cannot store a value of this request: {first_line}",
                                  request_id=request_id),
                    status_code=400, media_type=MediaType.JSON)


def journey_error(_: Request, exc) -> Response:
    """Every compile problem at once; `field` points at the first one as line:column."""
    first = exc.errors[0]
    details = [{"line": e.line, "column": e.column, "message": e.message} for e in exc.errors]
    return Response(content=_body("invalid_journey", f"{len(exc.errors)} problem(s); first: {first.message}",
                                  f"{first.line}:{first.column}", details=details),
                    status_code=400, media_type=MediaType.JSON)


HANDLERS = {
    JourneyCompileError: journey_error,
    TidingsError: tidings_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    UnicodeDecodeError: not_utf8,
    RecursionError: too_deep,
    DataError: database_refused,
    Exception: internal_error,
}
