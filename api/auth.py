"""Workspace-key authentication for every /v1 route: a router guard, so no handler can forget it."""
from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from litestar import Request
from sqlalchemy import Engine

from engine.workspaces import WorkspaceRef, authenticate


def require_workspace_key(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
    connection.state.workspace = authenticate(connection.app.state.db, connection.headers.get("authorization"))


def current_workspace(request: Request) -> WorkspaceRef:
    return request.state.workspace


def database(request: Request) -> Engine:
    return request.app.state.db
