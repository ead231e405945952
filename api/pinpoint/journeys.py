"""Journeys: a Pinpoint journey is a native journey. Its JSON is translated to the journey YAML
(tidings.engine.journeys.pinpoint.to_yaml), compiled and stored by the native store, so it is visible at
/v1/journeys and runs on the same interpreter; reads are built back from the stored IR (to_pinpoint).
Pinpoint's states map to the native lifecycle: DRAFT = draft, ACTIVE = active, PAUSED = paused,
CANCELLED = stopped."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException, ConflictException, NotFoundException
from tidings.api.pinpoint.segments import _page
from tidings.engine.journeys import counts, ir, store
from tidings.engine.journeys.language.issues import JourneyCompileError
from tidings.engine.journeys.pinpoint import journey_parts, journey_yaml
from tidings.engine.journeys.pinpoint.campaigns import campaign_of
from tidings.engine.journeys.store import JourneyInfo
from tidings.engine.platform.clock import ms_to_iso, now_ms
from tidings.engine.workspaces.tags import get_tags, tags_for

STATES = {"draft": "DRAFT", "active": "ACTIVE", "paused": "PAUSED", "stopped": "CANCELLED"}
# journey_run statuses -> GetJourneyExecutionMetrics names
RUN_METRICS = {"active": "ENDPOINT_ACTIVE", "completed": "ENDPOINT_COMPLETED", "exited": "ENDPOINT_EXITED",
               "held_out": "ENDPOINT_HELD_OUT"}
ACTIVITY_TYPES = {"send": "MESSAGE", "wait": "WAIT", "wait_for": "CONDITIONAL_SPLIT", "holdout": "HOLDOUT",
                  "random_split": "RANDOM_SPLIT"}
# a send step's outcomes (journey_run steps) -> Pinpoint's activity metric names
OUTCOMES = {"sent": "SUCCESS", "quiet_hours": "QUIET_TIME", "frequency_cap": "DAILY_CAP"}


def _response(app_id: str, info: JourneyInfo, tags: dict[str, str]) -> dict[str, Any]:
    assert info.ir is not None
    return {"ApplicationId": app_id, "Id": info.id, "Name": info.name, "CreationDate": info.created_at,
            "LastModifiedDate": info.updated_at, "State": STATES[info.status], "tags": tags, **journey_parts(info.ir)}


def _answer(ctx: Context, info: JourneyInfo) -> dict[str, Any]:
    """WriteJourneyRequest has no `tags` member: a journey's tags are TagResource's (api/pinpoint/tags.py)."""
    return _response(ctx.workspace.name, info, get_tags(ctx.db, ctx.workspace.id, f"journeys/{info.id}"))


def _yaml(request: dict[str, Any], journey_id: str) -> str:
    if not 1 <= len((request.get("Name") or "").strip()) <= 255:
        raise BadRequestException("WriteJourneyRequest.Name: 1-255 characters")
    if request.get("State") not in (None, "DRAFT", "ACTIVE"):
        raise BadRequestException(f"WriteJourneyRequest.State: DRAFT or ACTIVE (UpdateJourneyState pauses and "
                                  f"cancels), got {request['State']}")
    return journey_yaml(request, journey_id)


def _put(ctx: Context, text: str, journey_id: str) -> JourneyInfo:
    try:
        store.put_journey(ctx.db, ctx.workspace, text, path="WriteJourneyRequest", expected_id=journey_id)
    except JourneyCompileError as exc:  # a template or segment it names does not exist in the application
        raise BadRequestException("WriteJourneyRequest: " + "; ".join(
            f"{e.message} (line {e.line} of the journey's YAML)" if e.line else e.message for e in exc.errors)) from None
    return store.get_journey(ctx.db, ctx.workspace, journey_id)


async def _activate(ctx: Context, journey_id: str) -> None:
    client = await ctx.app_state.temporal.client()
    await store.activate(client, ctx.db, ctx.workspace, journey_id, **ctx.app_state.settings.journey_queues())


async def journey_of(ctx: Context, journey_id: str) -> JourneyInfo:
    info = await asyncio.to_thread(store.get_journey, ctx.db, ctx.workspace, journey_id)
    if campaign_of(info.yaml) is not None:  # a campaign's journey is read and changed as the campaign
        raise NotFoundException(f"no journey {journey_id!r}; it is a campaign (GetCampaign)")
    return info


@operation("CreateJourney")
async def create_journey_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    request = params["WriteJourneyRequest"]
    journey_id = uuid.uuid4().hex  # Pinpoint's journey ids are 32 hex digits
    text = _yaml(request, journey_id)
    await asyncio.to_thread(_put, ctx, text, journey_id)
    if request.get("State") == "ACTIVE":
        await _activate(ctx, journey_id)
    return {"JourneyResponse": await asyncio.to_thread(_answer, ctx, await journey_of(ctx, journey_id))}


@operation("UpdateJourney")
async def update_journey_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A new version when the journey changed; an active journey rolls out to it at once (runs already in
    finish on theirs). A cancelled journey cannot change."""
    journey_id = params["JourneyId"]
    request = params["WriteJourneyRequest"]
    current = await journey_of(ctx, journey_id)
    if current.status == "stopped":
        raise ConflictException("the journey is CANCELLED; a cancelled journey cannot be changed")
    text = _yaml(request, journey_id)
    info = await asyncio.to_thread(_put, ctx, text, journey_id)
    if info.status == "active" or (request.get("State") == "ACTIVE" and info.status == "draft"):
        await _activate(ctx, journey_id)
    return {"JourneyResponse": await asyncio.to_thread(_answer, ctx, await journey_of(ctx, journey_id))}


@operation("UpdateJourneyState")
async def update_journey_state_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    journey_id = params["JourneyId"]
    wanted = (params.get("JourneyStateRequest") or {}).get("State")
    info = await journey_of(ctx, journey_id)
    client = await ctx.app_state.temporal.client()
    field = "JourneyStateRequest.State"
    if wanted not in ("ACTIVE", "PAUSED", "CANCELLED"):
        raise BadRequestException(f"{field}: ACTIVE, PAUSED or CANCELLED, got {wanted}")
    if info.status == "stopped" and wanted != "CANCELLED":
        raise BadRequestException(f"{field}: the journey is CANCELLED; it cannot become {wanted}")
    if wanted == "ACTIVE":
        if info.status == "draft":
            await _activate(ctx, journey_id)
        elif info.status == "paused":
            await store.resume(client, ctx.db, ctx.workspace, journey_id)
            if info.version != info.active_version:  # updated while paused: roll out to the new version now
                await _activate(ctx, journey_id)
    elif wanted == "PAUSED":
        if info.status == "draft":
            raise BadRequestException(f"{field}: a DRAFT journey has not started; there is nothing to pause")
        if info.status == "active":
            await store.pause(client, ctx.db, ctx.workspace, journey_id)
    elif info.status != "stopped":
        await store.stop(client, ctx.db, ctx.workspace, journey_id)
    return {"JourneyResponse": await asyncio.to_thread(_answer, ctx, await journey_of(ctx, journey_id))}


@operation("GetJourney")
async def get_journey_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"JourneyResponse": await asyncio.to_thread(_answer, ctx, await journey_of(ctx, params["JourneyId"]))}


@operation("DeleteJourney")
async def delete_journey_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    response = await asyncio.to_thread(_answer, ctx, await journey_of(ctx, params["JourneyId"]))
    client = await ctx.app_state.temporal.client()
    await store.delete_journey(client, ctx.db, ctx.workspace, params["JourneyId"])
    return {"JourneyResponse": response}


@operation("ListJourneys")
async def list_journeys_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    def listed() -> list[dict[str, Any]]:
        found = [store.get_journey(ctx.db, ctx.workspace, j.id) for j in store.list_journeys(ctx.db, ctx.workspace)]
        # a campaign is a journey to Tidings, but GetCampaigns lists it (api/pinpoint/campaigns.py)
        listed = [info for info in found if campaign_of(info.yaml) is None]
        tags = tags_for(ctx.db, ctx.workspace.id, [f"journeys/{info.id}" for info in listed])
        return [_response(ctx.workspace.name, info, tags.get(f"journeys/{info.id}", {})) for info in listed]
    return {"JourneysResponse": _page(await asyncio.to_thread(listed), "Id", params)}


@operation("GetJourneyExecutionMetrics")
async def journey_metrics_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    journey_id = params["JourneyId"]
    await journey_of(ctx, journey_id)
    totals = await asyncio.to_thread(counts.run_totals, ctx.db, ctx.workspace, journey_id)
    return {"JourneyExecutionMetricsResponse": {
        "ApplicationId": ctx.workspace.name, "JourneyId": journey_id, "LastEvaluatedTime": ms_to_iso(now_ms()),
        "Metrics": run_metrics(totals)}}


def run_metrics(totals: dict[str, int]) -> dict[str, str]:
    """Pinpoint's execution metrics of runs counted by status (the journey's, or one firing's)."""
    metrics = {"ENDPOINT_ENTERED": str(sum(totals.values()))}
    metrics.update({name: str(totals.get(status, 0)) for status, name in RUN_METRICS.items()})
    return metrics


def _activity_type(j: ir.JourneyIR, node: ir.Node) -> str:
    if isinstance(node, ir.SplitNode) or isinstance(node, ir.WaitNode) and f"{node.id}--when" in j.nodes:
        split = j.nodes.get(f"{node.id}--when", node)
        targets = {b.next for b in split.branches} if isinstance(split, ir.SplitNode) else set()
        return "CONDITIONAL_SPLIT" if len(targets) <= 1 else "MULTI_CONDITIONAL_SPLIT"
    return ACTIVITY_TYPES.get(node.__struct_config__.tag, "EXIT")  # type: ignore[arg-type]


@operation("GetJourneyExecutionActivityMetrics")
async def activity_metrics_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    journey_id, activity = params["JourneyId"], params["JourneyActivityId"]
    info = await journey_of(ctx, journey_id)
    node = activity_node(info, activity)
    by_step = await asyncio.to_thread(counts.step_counts, ctx.db, ctx.workspace, journey_id)
    return {"JourneyExecutionActivityMetricsResponse": {
        "ActivityType": activity_type(info, node), "ApplicationId": ctx.workspace.name,
        "JourneyActivityId": activity, "JourneyId": journey_id, "LastEvaluatedTime": ms_to_iso(now_ms()),
        "Metrics": activity_metrics(by_step, node.id)}}


def activity_node(info: JourneyInfo, activity: str) -> ir.Node:
    """The step a Pinpoint activity id names (NotFoundException naming JourneyActivityId otherwise)."""
    assert info.ir is not None
    step = activity.lower()
    node = info.ir.nodes.get(step)
    if node is None or "--" in step:
        raise NotFoundException(f"JourneyActivityId: no activity {activity!r} in journey {info.id!r}")
    return node


def activity_type(info: JourneyInfo, node: ir.Node) -> str:
    assert info.ir is not None
    return _activity_type(info.ir, node)


def activity_metrics(by_step: dict[str, counts.StepCounts], step: str) -> dict[str, str]:
    """Pinpoint's activity metrics from step counts (the journey's, or one firing's)."""
    # a split's evaluation wait and its chained splits are one activity: their counts are the activity's
    parts = [by_step[s] for s in by_step if s == step or s.startswith(f"{step}--")]
    first = by_step.get(step) or counts.StepCounts()
    metrics = {"ENTERED": str(first.entered), "ACTIVE": str(sum(p.waiting for p in parts)),
               "ENDED": str(sum(p.ended for p in parts))}
    for outcome, n in first.outcomes.items():
        metrics[OUTCOMES.get(outcome, outcome.upper())] = str(n)
    return metrics
