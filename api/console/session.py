"""The console's sign-in: a workspace key typed once, then an encrypted, expiring, HttpOnly,
SameSite=Strict session cookie that holds the key's hash (checked against live keys on every page, so
revoking the key signs the browser out). Forms carry a CSRF token (Litestar's double-submit middleware)."""
from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import SerializationException
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.session import SessionMiddleware
from litestar.middleware.session.client_side import (
    ClientSideSessionBackend,
    CookieBackendConfig,
)
from litestar.types import ASGIApp

from tidings.engine.platform.config import Settings
from tidings.engine.platform.errors import Unauthorized
from tidings.engine.workspaces.service import WorkspaceRef
from tidings.engine.workspaces.sessions import workspace_of_key_hash

SESSION_SECONDS = 8 * 3600
PREFIX = "/console"


class SignInNeeded(Exception):
    """No live session: the console answers with the sign-in page."""


def secret(settings: Settings) -> bytes:
    """32 bytes shared by every API process of this deployment: TIDINGS_CONSOLE_SECRET (hex), else a file
    made once in TIDINGS_HOME (sessions then survive restarts)."""
    given = os.environ.get("TIDINGS_CONSOLE_SECRET")
    if given:
        return hashlib.sha256(given.encode()).digest()
    path = Path(settings.home) / "console-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def session_middleware(key: bytes) -> DefineMiddleware:
    config = CookieBackendConfig(secret=key, key="tidings_console", max_age=SESSION_SECONDS, path=PREFIX,
                                 httponly=True, samesite="strict")
    return DefineMiddleware(_session, config=config)


class _CookieBackend(ClientSideSessionBackend):
    """Litestar's encrypted cookie, where any cookie that does not decode is no session: Litestar itself
    only forgives a bad tag or bad base64, and a cookie edited in its clear part raised (a 500)."""

    async def load_from_connection(self, connection: ASGIConnection) -> dict[str, Any]:
        try:
            return await super().load_from_connection(connection)
        except (ValueError, KeyError, TypeError, IndexError, msgspec.DecodeError, SerializationException):
            return {}


def _session(app: ASGIApp, config: CookieBackendConfig) -> SessionMiddleware:
    # Built when the app is, not with the router: Litestar copies routers, and the cipher cannot be copied.
    return SessionMiddleware(app=app, backend=_CookieBackend(config=config))


def csrf_config(key: bytes) -> CSRFConfig:
    return CSRFConfig(secret=hashlib.sha256(b"csrf" + key).hexdigest(), cookie_name="tidings_console_csrf",
                      cookie_path=PREFIX, cookie_httponly=True, cookie_samesite="strict")


def start(request: Request, key_hash: str) -> None:
    request.set_session({"key": key_hash, "exp": int(time.time()) + SESSION_SECONDS})


def signed_in_workspace(request: Request) -> WorkspaceRef:
    """The session's workspace; SignInNeeded when there is none, it expired, or its key was revoked."""
    session = request.session or {}
    if not session.get("key") or session.get("exp", 0) < time.time():
        raise SignInNeeded
    try:
        return workspace_of_key_hash(request.app.state.db, session["key"])
    except Unauthorized:
        raise SignInNeeded from None
