"""Jinja2 pages: autoescaped, with the request's CSRF token and the signed-in workspace in every one."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response
from litestar.utils.scope.state import ScopeState

from tidings.engine.platform.clock import ms_to_iso

TEMPLATES = Path(__file__).parent / "templates"
ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                  trim_blocks=True, lstrip_blocks=True)
ENV.filters["as_json"] = lambda v: json.dumps(msgspec.to_builtins(v), indent=2, ensure_ascii=False, sort_keys=True)
ENV.filters["iso"] = lambda ms: ms_to_iso(ms) if ms else ""


def csrf_token(request: Request) -> str:
    token = ScopeState.from_scope(request.scope).csrf_token
    return token if isinstance(token, str) else ""


def page(request: Request, template: str, /, status_code: int = 200, **context: Any) -> Response:
    html = ENV.get_template(template).render(request=request, csrf_token=csrf_token(request), **context)
    return Response(html, status_code=status_code, media_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                             "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                                        "img-src 'self' data:; frame-ancestors 'none'"})
