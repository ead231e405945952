"""The /pinpoint mount: one ASGI app that authenticates (SigV4), routes by botocore's model, decodes the input,
calls the operation's handler and answers in Pinpoint's shape. Litestar's own handlers, errors and OpenAPI
document are not involved: this surface is described by botocore's model, not by /schema."""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import msgspec
from cryptography.fernet import InvalidToken
from litestar import asgi
from litestar.types import Receive, Scope, Send
from sqlalchemy import Engine

from tidings.api.guard import request_id_of
from tidings.api.pinpoint.errors import (
    AuthFailure,
    BadRequestException,
    ForbiddenException,
    InternalServerErrorException,
    MethodNotAllowedException,
    NotFoundException,
    PayloadTooLargeException,
    PinpointError,
    from_engine,
)
from tidings.api.pinpoint.protocol import Operation, parse_input, payload_of, route
from tidings.api.pinpoint.sigv4 import SignedRequest, check_signature, read_claim
from tidings.engine.channels.secrets import keyring
from tidings.engine.platform.errors import TidingsError
from tidings.engine.workspaces.access_keys import AccessKey, find_access_key
from tidings.engine.workspaces.service import WorkspaceRef, find_workspace

MOUNT = "/pinpoint"
MAX_BODY = 7 * 1024 * 1024  # Pinpoint's largest request (UpdateEndpointsBatch) is bounded at 7 MB
log = logging.getLogger("tidings.pinpoint")


@dataclass(frozen=True)
class Context:
    db: Engine
    # The application the request names, or the key's own when it names none; None only for an admin key's
    # requests that name none (GetApps, CreateApp).
    workspace: WorkspaceRef | None
    request_id: str
    app_state: Any
    admin: bool = False  # an admin key: every workspace is reachable


# What only an admin key may do; with a workspace's key these answer ForbiddenException.
ADMIN_OPERATIONS = {"CreateApp", "DeleteApp"}


Handler = Callable[[Context, dict[str, Any]], Awaitable[dict[str, Any]]]
HANDLERS: dict[str, Handler] = {}


def operation(name: str) -> Callable[[Handler], Handler]:
    """Register the handler of one Pinpoint operation (by its name in botocore's model)."""
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn
    return register


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]  # an HTTP request message
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLargeException(f"the request body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _signed_request(scope: Scope, body: bytes) -> SignedRequest:
    raw = scope.get("raw_path")
    raw_path = raw.decode("latin-1") if raw else quote(scope["path"])
    return SignedRequest(method=scope["method"], raw_path=raw_path.split("?", 1)[0],  # type: ignore[typeddict-item]  # HTTP scopes only
                         query_string=scope.get("query_string", b"").decode("latin-1"),
                         headers=[(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]],
                         body=body)


def authenticate(db: Engine, request: SignedRequest) -> AccessKey:
    claim = read_claim(request, datetime.now(UTC))
    key = find_access_key(db, claim.access_key_id)
    if key is None:
        raise AuthFailure("UnrecognizedClientException", "The security token included in the request is invalid.")
    ring = keyring()
    try:
        if ring is None:
            raise InvalidToken
        secret = ring.open(key.sealed_secret)
    except InvalidToken:
        log.error("the secret of Pinpoint key %s does not open with the configured encryption keys", key.access_key_id)
        raise InternalServerErrorException("this server cannot open the stored secret of this access key; "
                                           "its operator must configure the encryption key it was sealed with") from None
    check_signature(request, claim, secret)
    return key


def _workspace(db: Engine, key: AccessKey, params: dict[str, Any]) -> WorkspaceRef | None:
    """The workspace the request reaches: the key's own (any other ApplicationId is not found), or for an
    admin key the one its ApplicationId names (None when it names none)."""
    app_id = params.get("ApplicationId")
    if key.workspace is not None:
        if app_id is not None and app_id != key.workspace.name:
            raise NotFoundException("Resource not found")  # Pinpoint's words; nothing said about other workspaces
        return key.workspace
    if app_id is None:
        return None
    try:
        return find_workspace(db, app_id)
    except TidingsError:
        raise NotFoundException("Resource not found") from None


def _unimplemented(op: Operation) -> PinpointError:
    message = f"Tidings does not implement the Pinpoint operation {op.name} (see docs/pinpoint.md for what it serves)"
    modelled = {e.name for e in op.model.error_shapes}
    return MethodNotAllowedException(message) if "MethodNotAllowedException" in modelled else BadRequestException(message)


async def _answer(scope: Scope, receive: Receive, db: Engine, request_id: str,
                  app_state: Any) -> tuple[int, Any]:
    body = await _read_body(receive)
    request = _signed_request(scope, body)
    key = await asyncio.to_thread(authenticate, db, request)
    path = request.raw_path.removeprefix(MOUNT)
    op, labels = route(request.method, path)
    handler = HANDLERS.get(op.name)
    if handler is None:
        raise _unimplemented(op)
    if op.name in ADMIN_OPERATIONS and not key.admin:
        raise ForbiddenException(f"{op.name} needs an admin key pair (tidings keys create --admin --pinpoint)")
    params = parse_input(op, labels, parse_qsl(request.query_string, keep_blank_values=True), body)
    workspace = await asyncio.to_thread(_workspace, db, key, params)
    output = await handler(Context(db, workspace, request_id, app_state, key.admin), params)
    return op.status, payload_of(op, output)


@asgi(MOUNT, is_mount=True, copy_scope=True)
async def pinpoint_mount(scope: Scope, receive: Receive, send: Send) -> None:
    request_id = request_id_of(scope) or uuid.uuid4().hex
    app_state = scope["app"].state
    error_type = None
    try:
        status, payload = await _answer(scope, receive, app_state.db, request_id, app_state)
    except PinpointError as exc:
        status, payload, error_type = exc.status, exc.body(request_id), exc.code
    except TidingsError as exc:
        mapped = from_engine(exc)
        status, payload, error_type = mapped.status, mapped.body(request_id), mapped.code
    except Exception:
        log.exception("internal error answering %s %s (request %s)", scope["method"], scope["path"], request_id)  # type: ignore[typeddict-item]
        mapped = InternalServerErrorException(f"internal error; see the server log for request {request_id}")
        status, payload, error_type = mapped.status, mapped.body(request_id), mapped.code
    # msgspec: a PutEvents answer holds a result per event (1,000 of them), ~9 ms with the stdlib's encoder
    # a 204 (TagResource, UntagResource) carries no content (RFC 9110): no body and no length to promise
    data = b"" if status == 204 else msgspec.json.encode(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"x-amzn-requestid", request_id.encode())]
    if error_type:
        headers.append((b"x-amzn-errortype", error_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})  # type: ignore[arg-type]
    await send({"type": "http.response.body", "body": data})  # type: ignore[arg-type]
