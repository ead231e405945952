"""The served OpenAPI document (/schema) says what the API answers, not only what its handlers return.

Litestar describes each handler's success response and a 400 in its own exception shape. Every other answer
comes from one place: the guard (401), the router (404 for an unknown id, 405), the body limit (413), the
engine's errors (400/404/409/403/503, shaped by api/errors.py) and overload (429/503). This module adds them
to every operation by rule, in the `{"error": {...}}` shape the API really sends, plus the few bodies
handlers read themselves (journey YAML, import files, provider callbacks). Checked by
tests/api/test_openapi_schemathesis.py.
"""
from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.openapi.spec import (
    Components, OpenAPI, OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, Operation, Reference, RequestBody, Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

ERROR_REF = "#/components/schemas/Error"
KEY_SCHEME = "workspaceKey"
METRICS_SCHEME = "metricsToken"

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "description": "Every error the API answers, whatever its status.",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "field"],
        "properties": {
            "code": {"type": "string", "description": "stable, machine-readable: invalid, not_found, conflict, ..."},
            "message": {"type": "string"},
            "field": {"type": ["string", "null"],
                      "description": "the field, parameter, header or `line:column` the error is about"},
            "details": {"type": "array", "items": {"type": "object"},
                        "description": "one entry per bad item, row or journey problem (first 100)"},
            "request_id": {"type": "string", "description": "the request's X-Request-Id, given on internal errors"},
        },
    }},
}

# Why each status can be answered: the descriptions the document shows.
WHY = {
    400: "Invalid input; `error.field` names the field, parameter or row.",
    401: "No workspace key, or an unknown or revoked one.",
    403: "The provider's signature or secret does not match the channel's.",
    404: "No such resource in this workspace.",
    409: "Conflicts with the current state (see `error.message`).",
    413: "The request body is larger than the server accepts.",
    429: "Too many requests for this key; retry after `Retry-After` seconds.",
    503: "Temporarily unable to serve this (overloaded, or a dependency is down); retry after `Retry-After`.",
}

# Answers particular to one operation, beyond the ones every operation gets by rule (see `_common_codes`).
EXTRA_CODES: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/messages"): (409,),  # Idempotency-Key reused with another body, or still in progress
    ("post", "/v1/messages/batch"): (409,),
    ("post", "/v1/segments"): (409,),  # the id exists
    ("post", "/v1/segments/{segment_id}/duplicate"): (409,),
    ("delete", "/v1/segments/{segment_id}"): (409,),  # used by active journeys or other segments
    ("put", "/v1/channels/{name}"): (409,),  # a channel type already served by another channel
    ("post", "/feedback/{workspace}/{channel}"): (403,),
    ("get", "/v1/events"): (404,),  # ?user_id= names a user this workspace does not have
    ("get", "/metrics"): (401,),  # not the scrape token (or metrics off: no TIDINGS_METRICS_TOKEN)
}
# Why, for an operation whose reasons differ from the API's usual ones.
WHY_HERE: dict[tuple[str, str], dict[int, str]] = {("get", "/metrics"): {
    401: "The scrape did not send `Authorization: Bearer <TIDINGS_METRICS_TOKEN>`, or metrics are off "
         "(TIDINGS_METRICS_TOKEN is not set)."}}
# Statuses an operation answers with a body of its own (declared by its handler), not the error shape.
OWN_BODIES: dict[tuple[str, str], set[int]] = {("get", "/ready"): {503}}

# Pages for people, not programs: their errors are HTML too.
HTML_ERRORS = {("get", "/t/u/{token}"), ("post", "/t/u/{token}")}

_TEXT = Schema(type="string")  # type: ignore[arg-type]
_JOURNEY = Schema(type="object",  # type: ignore[arg-type]
                  description="A `kind: Journey` document: see docs/journeys.md (its JSON Schema is "
                              "engine/journeys/language/schema.json).")
_FORM = Schema(type="object")  # type: ignore[arg-type]
# Any bytes: every row is checked, and a file with bad rows is refused naming each (an async job reports them).
_FILE = Schema(description="the file's bytes")
# Bodies the handlers read as bytes, so Litestar cannot see them.
RAW_BODIES: dict[tuple[str, str], RequestBody] = {
    ("put", "/v1/journeys/{journey_id}"): RequestBody(
        required=True, description="The journey, YAML (or JSON, which is YAML too).",
        content={"application/yaml": OpenAPIMediaType(schema=_JOURNEY)}),
    ("post", "/v1/journeys/validate"): RequestBody(
        required=False, description="Any text: what is not a valid journey is answered `valid: false` with "
                                    "every problem, not a 400.",
        content={"application/yaml": OpenAPIMediaType(schema=Schema())}),
    ("post", "/v1/segments/import"): RequestBody(
        required=True, description="The file: CSV, newline-delimited JSON, or one JSON array of rows.",
        content={"text/csv": OpenAPIMediaType(schema=_FILE), "application/x-ndjson": OpenAPIMediaType(schema=_FILE)}),
    ("post", "/feedback/{workspace}/{channel}"): RequestBody(
        required=False, description="The provider's callback, as the provider sends it.",
        content={"application/json": OpenAPIMediaType(schema=Schema()),
                 "application/x-www-form-urlencoded": OpenAPIMediaType(schema=_FORM)}),
    ("post", "/t/u/{token}"): RequestBody(
        required=False, description="`List-Unsubscribe=One-Click` (RFC 8058) from a mail client, or a form post.",
        content={"application/x-www-form-urlencoded": OpenAPIMediaType(schema=_FORM)}),
}

_JOB = Schema(type="object", required=["id", "status"], properties={  # type: ignore[arg-type]
    "id": _TEXT, "status": Schema(type="string", enum=["running", "succeeded", "failed"])})  # type: ignore[arg-type]
# Successes a handler answers besides the one its return type declares.
EXTRA_SUCCESSES: dict[tuple[str, str], dict[str, OpenAPIResponse]] = {
    ("post", "/v1/segments/import"): {"202": OpenAPIResponse(
        description="Large (or `async=true`) imports run as a job: poll GET /v1/import-jobs/{id}.",
        content={"application/json": OpenAPIMediaType(schema=_JOB)})},
    ("get", "/v1/segments/{segment_id}/export"): {"200": OpenAPIResponse(
        description="Every member, one row each, streamed (`format`: ndjson or csv).",
        content={"application/x-ndjson": OpenAPIMediaType(schema=_TEXT), "text/csv": OpenAPIMediaType(schema=_TEXT)})},
    ("get", "/v1/events/stream"): {"200": OpenAPIResponse(
        description="Server-Sent Events: `id:` is the stream position, `data:` one event as JSON; a comment "
                    "every 15 s keeps idle connections open.",
        content={"text/event-stream": OpenAPIMediaType(schema=_TEXT)})},
    ("put", "/v1/event-streams/{stream_id}"): {"201": OpenAPIResponse(
        description="The stream was created (200: it was updated).",
        content={"application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/StreamOut"))})},
}


_RETRY_AFTER = {"Retry-After": OpenAPIHeader(description="seconds to wait before retrying", required=False,
                                             schema=Schema(type="integer"))}  # type: ignore[arg-type]


def _error_response(status: int, html: bool = False, why: str | None = None) -> OpenAPIResponse:
    headers = _RETRY_AFTER if status in (429, 503) else None
    if html:
        return OpenAPIResponse(description=why or WHY[status], content={"text/html": OpenAPIMediaType(schema=_TEXT)})
    return OpenAPIResponse(description=why or WHY[status], headers=headers,  # type: ignore[arg-type]
                           content={"application/json": OpenAPIMediaType(schema=Reference(ref=ERROR_REF))})


def _common_codes(path: str, op: Operation) -> set[int]:
    codes = {503}
    if op.parameters or op.request_body:
        codes.add(400)
    if "{" in path:
        codes.add(404)  # an id this workspace does not have, or a path the router does not match
    if op.request_body:
        codes.add(413)
    if path.startswith("/v1/"):
        codes |= {401, 429}
    return codes


def _operations(openapi: OpenAPI):
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
            op = getattr(item, method, None)
            if op is not None:
                yield path, method, op


def _without_null(param: Any) -> None:
    """An optional text parameter is absent, never null: Litestar writes `Optional[str]` as
    `oneOf: [string, null]`, and a client would then send the text "null", which is just text. (For other
    types the API does read "null" as absent, so their `null` stays.)"""
    schema = param.schema
    if isinstance(schema, Schema) and schema.one_of:
        kept = [s for s in schema.one_of if not (isinstance(s, Schema) and s.type == "null")]
        only = kept[0] if len(kept) == 1 < len(schema.one_of) else None
        if isinstance(only, Schema) and only.type == "string":
            for name in ("type", "items", "enum", "format", "pattern", "minimum", "maximum"):
                if getattr(schema, name, None) is None and getattr(only, name, None) is not None:
                    setattr(schema, name, getattr(only, name))
            schema.one_of = None


def _any_of(schema: Any) -> None:
    """Litestar writes every union as `oneOf`, but `int | float` takes 1 as both (oneOf would then refuse it)
    and the API takes a value matching any arm: `anyOf`, everywhere (the same for disjoint arms)."""
    if isinstance(schema, Schema):
        if schema.one_of:
            schema.any_of, schema.one_of = [*(schema.any_of or []), *schema.one_of], None
        for value in (schema.properties or {}).values():
            _any_of(value)
        for value in [*(schema.any_of or []), *(schema.all_of or []), *(schema.prefix_items or [])]:
            _any_of(value)
        for extra in (schema.items, schema.additional_properties, schema.schema_not):
            _any_of(extra)


def _struct_classes() -> dict[str, set[type]]:
    """Every msgspec Struct class loaded, by class name (the name Litestar gives its component)."""
    found: dict[str, set[type]] = {}
    pending = [msgspec.Struct]
    while pending:
        for cls in pending.pop().__subclasses__():
            if cls not in found.setdefault(cls.__name__, set()):
                found[cls.__name__].add(cls)
                pending.append(cls)
    return found


def _close_strict_bodies(components: Components) -> None:
    """A Struct with `forbid_unknown_fields` answers 400 to any other key: say `additionalProperties: false`."""
    classes = _struct_classes()
    for name, schema in (components.schemas or {}).items():
        [cls, *others] = classes.get(name) or [None]  # a name two classes share: leave it as it is
        if cls is None or others or not isinstance(schema, Schema) or schema.properties is None:
            continue
        if cls.__struct_config__.forbid_unknown_fields:  # type: ignore[attr-defined]  # a msgspec Struct
            schema.additional_properties = False


def complete(openapi: OpenAPI) -> None:
    """Add what every operation really answers to Litestar's document, in place."""
    components = openapi.components if isinstance(openapi.components, Components) else Components()
    openapi.components = components
    components.schemas = {**(components.schemas or {}), "Error": ERROR_SCHEMA}  # type: ignore[dict-item]
    components.security_schemes = {**(components.security_schemes or {}), KEY_SCHEME: SecurityScheme(
        type="http", scheme="bearer", description="A workspace key (`tidings keys create`): `Bearer tk_...`."),
        METRICS_SCHEME: SecurityScheme(type="http", scheme="bearer",
                                       description="The operator's scrape token: `TIDINGS_METRICS_TOKEN`.")}
    _close_strict_bodies(components)
    for schema in (components.schemas or {}).values():
        _any_of(schema)
    for path, method, op in _operations(openapi):
        if (method, path) in RAW_BODIES:
            op.request_body = RAW_BODIES[method, path]
        for param in op.parameters or ():
            if getattr(param, "param_in", None) in ("query", "header"):
                _without_null(param)
            _any_of(getattr(param, "schema", None))
        for media in (op.request_body.content if isinstance(op.request_body, RequestBody) else {}).values():
            _any_of(media.schema)
        if path.startswith("/v1/"):
            op.security = [{KEY_SCHEME: []}]
        elif path == "/metrics":
            op.security = [{METRICS_SCHEME: []}]
        responses = op.responses = {**(op.responses or {}), **EXTRA_SUCCESSES.get((method, path), {})}
        html = (method, path) in HTML_ERRORS
        own = OWN_BODIES.get((method, path), set())
        for status in sorted((_common_codes(path, op) | set(EXTRA_CODES.get((method, path), ()))) - own):
            responses[str(status)] = _error_response(status, html and status in (400, 404),
                                                     WHY_HERE.get((method, path), {}).get(status))


def allowed_methods(app: Litestar) -> dict[int, str]:
    """`Allow` for each route handler (by id), from the methods of the path it serves. Litestar 2.25 builds a
    path's OPTIONS handler with the methods of its first handler only, so OPTIONS on a path served by
    several handlers (GET and PUT of /v1/users/{id}) left some out; `answer_options` answers from this."""
    return {id(handler): ", ".join(sorted(route.methods))
            for route in app.routes if isinstance(route, HTTPRoute) for handler in route.route_handlers}


def answer_options(request: Request) -> Response | None:
    """The app's before_request hook: OPTIONS lists every method of the path (see `allowed_methods`)."""
    if request.method != "OPTIONS":  # first: this runs before every request
        return None
    allow = request.app.state.allowed_methods.get(id(request.route_handler))
    return None if allow is None else Response(content=None, status_code=204, headers={"Allow": allow})
