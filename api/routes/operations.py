"""What operators and their tools call, outside /v1 and without a workspace key: /ready and /metrics.

/health (api/app.py) says the process is alive; /ready whether it can serve (a load balancer's check);
/metrics is the Prometheus scrape. Neither says anything about a workspace (tidings.engine.platform.metrics_registry).
"""
from __future__ import annotations

import asyncio
import hmac
from datetime import timedelta
from typing import Literal

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from tidings.api.temporal import TemporalUnavailable
from tidings.engine.platform import readiness
from tidings.engine.platform.errors import Unauthorized
from tidings.engine.platform.metrics_registry import exposition

CHECK_SECONDS = 3.0  # a dependency slower than this to answer is not ready either


class Readiness(msgspec.Struct):
    status: Literal["ready", "not_ready"]
    not_ready: list[str]  # the checks that failed, by name (empty when ready)
    checks: dict[str, str]  # database, migrations, temporal: "ok" or what is wrong


async def _temporal_problem(request: Request) -> str:
    settings = request.app.state.settings
    try:
        client = await asyncio.wait_for(request.app.state.temporal.client(), CHECK_SECONDS)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=settings.temporal_namespace), timeout=timedelta(seconds=CHECK_SECONDS))
    except TemporalUnavailable as exc:  # refused: it says where it looked
        return exc.message[:400]
    except Exception as exc:  # timed out, no such namespace: the journey calls would fail the same way
        detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return f"cannot use namespace {settings.temporal_namespace!r} at {settings.temporal_address}: {detail[:300]}"
    return "ok"


@get("/ready", responses={503: ResponseSpec(
    data_container=Readiness, description="Not ready: `not_ready` names the checks that failed, `checks` why.")})
async def ready(request: Request) -> Response[Readiness]:
    """200 when the database answers, its schema is at the migrations' head and Temporal serves the
    namespace; else 503 naming what is not ready."""
    store, temporal = await asyncio.gather(
        asyncio.wait_for(asyncio.to_thread(readiness.store_problems, request.app.state.db), CHECK_SECONDS * 2),
        _temporal_problem(request), return_exceptions=True)
    if isinstance(store, BaseException):
        store = {"database": f"the database did not answer within {CHECK_SECONDS * 2:g} s",
                 "migrations": "unknown: the database did not answer"}
    checks = {**store, "temporal": temporal if isinstance(temporal, str) else f"{type(temporal).__name__}"}
    failed = sorted(name for name, state in checks.items() if state != "ok")
    return Response(Readiness(status="not_ready" if failed else "ready", not_ready=failed, checks=checks),
                    status_code=503 if failed else 200, media_type=MediaType.JSON)


@get("/metrics", sync_to_thread=False, media_type=MediaType.TEXT)
def metrics(request: Request) -> Response[bytes]:
    """Prometheus text format, for a scrape sending `Authorization: Bearer <TIDINGS_METRICS_TOKEN>`; without
    that setting no credential is valid (metrics are off), so every scrape is a 401 saying so."""
    token = request.app.state.settings.metrics_token
    if not token:
        raise Unauthorized("metrics are off: set TIDINGS_METRICS_TOKEN and scrape with that bearer token")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("/metrics needs `Authorization: Bearer <TIDINGS_METRICS_TOKEN>`")
    body, content_type = exposition()
    return Response(body, headers={"Content-Type": content_type})  # as is: Litestar would add a 2nd charset
