"""Every error leaves the API as {"error": {"code", "message", "field"}}, mapped here once."""
from __future__ import annotations

import re

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from engine.errors import TidingsError
from engine.journeys.issues import JourneyCompileError

# msgspec's words for a body that is not JSON at all (as opposed to JSON of the wrong shape).
_MALFORMED = ("JSON is malformed", "Input data was truncated")
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
    return Response(content=_body(code, str(exc.detail)), status_code=exc.status_code, media_type=MediaType.JSON,
                    headers=exc.headers)


def internal_error(_: Request, exc: Exception) -> Response:
    return Response(content=_body("internal", "internal error; see the server log"), status_code=500,
                    media_type=MediaType.JSON)


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
}
