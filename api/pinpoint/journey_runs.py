"""GetJourneyRuns, GetJourneyRunExecutionMetrics, GetJourneyRunExecutionActivityMetrics. A run is a firing of the
journey (tidings.engine.journeys.firings): one start of a broadcast (a one-off, or one firing of its schedule),
or one version's activation of an event- or segment-triggered journey. Its RunId is the number of its first
cohort; its metrics are GetJourneyExecution(Activity)Metrics' counts over its own runs."""
from __future__ import annotations

import asyncio
from typing import Any

from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException, NotFoundException
from tidings.api.pinpoint.journeys import activity_metrics, activity_node, activity_type, journey_of, run_metrics
from tidings.api.pinpoint.segments import MAX_PAGE
from tidings.engine.journeys import counts
from tidings.engine.journeys.firings import Firing, get_firing, list_firings
from tidings.engine.platform.clock import ms_to_iso, now_ms
from tidings.engine.platform.errors import NotFound


def _run(firing: Firing) -> dict[str, Any]:
    return {"CreationTime": ms_to_iso(firing.created_at), "LastUpdateTime": ms_to_iso(firing.updated_at),
            "RunId": firing.firing_id, "Status": firing.status}


async def _firing(ctx: Context, journey_id: str, run_id: str) -> Firing:
    try:
        return await asyncio.to_thread(get_firing, ctx.db, ctx.workspace, journey_id, run_id)
    except NotFound:
        raise NotFoundException(f"RunId: no run {run_id!r} of journey {journey_id!r} (GetJourneyRuns lists them)") \
            from None


@operation("GetJourneyRuns")
async def journey_runs_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Newest first, as Pinpoint lists them; the Token is the RunId the previous page ended at."""
    journey_id = params["JourneyId"]
    await journey_of(ctx, journey_id)
    size = params.get("PageSize") or str(MAX_PAGE)
    if not size.isdigit() or not 1 <= int(size) <= MAX_PAGE:
        raise BadRequestException(f"PageSize: a number from 1 to {MAX_PAGE}, got {size!r}")
    firings = list(reversed(await asyncio.to_thread(list_firings, ctx.db, ctx.workspace, journey_id)))
    token = params.get("Token")
    if token:
        if not token.isdigit():
            raise BadRequestException(f"Token: a NextToken of GetJourneyRuns, got {token!r}")
        firings = [f for f in firings if int(f.firing_id) < int(token)]
    page = firings[:int(size)]
    out: dict[str, Any] = {"Item": [_run(f) for f in page]}
    if len(firings) > len(page):
        out["NextToken"] = page[-1].firing_id
    return {"JourneyRunsResponse": out}


@operation("GetJourneyRunExecutionMetrics")
async def journey_run_metrics_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    journey_id = params["JourneyId"]
    await journey_of(ctx, journey_id)
    firing = await _firing(ctx, journey_id, params["RunId"])
    return {"JourneyRunExecutionMetricsResponse": {
        "ApplicationId": ctx.workspace.name, "JourneyId": journey_id, "RunId": firing.firing_id,
        "LastEvaluatedTime": ms_to_iso(now_ms()), "Metrics": run_metrics(firing.runs)}}


@operation("GetJourneyRunExecutionActivityMetrics")
async def journey_run_activity_metrics_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    journey_id, activity = params["JourneyId"], params["JourneyActivityId"]
    info = await journey_of(ctx, journey_id)
    firing = await _firing(ctx, journey_id, params["RunId"])
    node = activity_node(info, activity)
    by_step = await asyncio.to_thread(counts.step_counts, ctx.db, ctx.workspace, journey_id, cohorts=firing.cohorts)
    return {"JourneyRunExecutionActivityMetricsResponse": {
        "ActivityType": activity_type(info, node), "ApplicationId": ctx.workspace.name,
        "JourneyActivityId": activity, "JourneyId": journey_id, "RunId": firing.firing_id,
        "LastEvaluatedTime": ms_to_iso(now_ms()), "Metrics": activity_metrics(by_step, node.id)}}
