"""Campaigns: a Pinpoint campaign is a broadcast journey. Its WriteCampaignRequest is translated into a journey
(tidings.engine.journeys.pinpoint.campaigns), stored and activated by the native store, so it is listed at
/v1/journeys, runs on the same interpreter and shows in Temporal's UI as that journey's broadcast. Inline
message content is stored as templates of the campaign's own (`campaign-<id>-email`). Campaign versions are
the journey's versions; the state is read from the journey's status and counts:
PAUSED (IsPaused, or the journey paused), SCHEDULED (nobody admitted yet), EXECUTING, COMPLETED."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tidings.api.pinpoint.apps import app_arn
from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException, NotFoundException
from tidings.api.pinpoint.segments import _page, check_version, version_of
from tidings.engine.journeys import counts, store
from tidings.engine.journeys.language.issues import JourneyCompileError
from tidings.engine.journeys.pinpoint.campaigns import (
    CampaignJourney, InlineTemplate, activity_id, campaign_journey, campaign_of,
)
from tidings.engine.journeys.store import JourneyInfo
from tidings.engine.messaging.template_store import TemplateBody, delete_template, list_templates, put_template
from tidings.engine.platform.clock import ms_to_iso
from tidings.engine.platform.errors import InvalidInput, NotFound
from tidings.engine.segments.service import get_segment
from tidings.engine.workspaces.service import WorkspaceRef
from tidings.engine.workspaces.tags import check_tags, get_tags

# a template part -> the member of the campaign's message it came from
PART_MEMBERS = {"subject": "Title", "text": "Body", "html": "HtmlBody", "body": "Body"}


def _workspace(ctx: Context) -> WorkspaceRef:
    if ctx.workspace is None:
        raise BadRequestException("campaigns belong to an application: name its ApplicationId")
    return ctx.workspace


def _translate(ctx: Context, request: dict[str, Any], campaign_id: str) -> CampaignJourney:
    """The campaign's journey, with SegmentVersion checked against (or filled in from) the segment."""
    workspace = _workspace(ctx)
    try:
        translated = campaign_journey(request, campaign_id)
    except InvalidInput as exc:
        raise BadRequestException(exc.message) from None
    try:
        segment = get_segment(ctx.db, workspace, translated.segment_id)
    except NotFound:
        raise BadRequestException(f"SegmentId: no segment {translated.segment_id!r} in this application") from None
    catalog = store.DbCatalog(ctx.db, workspace.id)
    for where, treatment in [("", request)] + [(f"AdditionalTreatments[{i}].", t) for i, t in
                                               enumerate(request.get("AdditionalTreatments") or [])]:
        for member, chosen in ((treatment.get("TemplateConfiguration") or {}) or {}).items():
            name = (chosen or {}).get("Name")
            # checked before anything is stored: the inline templates are written before the journey
            if name and not catalog.has_template(str(name).lower()):
                raise BadRequestException(f"{where}TemplateConfiguration.{member}.Name: no template {name!r} "
                                          "in this application")
    wanted = request.get("SegmentVersion")
    if wanted is None:
        # kept with the campaign, as Pinpoint answers it; Tidings sends to the segment as it is when it runs
        return campaign_journey({**request, "SegmentVersion": segment.version}, campaign_id)
    if wanted != segment.version:
        raise BadRequestException(f"SegmentVersion: Tidings sends to the segment's current version "
                                  f"({segment.version}), got {wanted!r}")
    return translated


def _tags(request: dict[str, Any]) -> dict[str, str]:
    """The `tags` of a CreateCampaign body, checked before anything is written."""
    tags = request.get("tags") or {}
    try:
        check_tags(tags, "WriteCampaignRequest.tags")
    except InvalidInput as exc:
        raise BadRequestException(f"{exc.field}: {exc.message}") from None
    return tags


def _store(ctx: Context, translated: CampaignJourney, campaign_id: str, tags: dict[str, str] | None = None) -> JourneyInfo:
    workspace = _workspace(ctx)
    for t in translated.templates:
        _put_template(ctx, workspace, t)
    try:
        store.put_journey(ctx.db, workspace, translated.yaml, path="WriteCampaignRequest", expected_id=campaign_id,
                          tags=tags, tags_resource=f"campaigns/{campaign_id}")
    except JourneyCompileError as exc:  # a template of TemplateConfiguration that does not exist
        raise BadRequestException("TemplateConfiguration: " + "; ".join(e.message for e in exc.errors)) from None
    return store.get_journey(ctx.db, workspace, campaign_id)


def _put_template(ctx: Context, workspace: WorkspaceRef, t: InlineTemplate) -> None:
    body = TemplateBody(channel=t.channel, defaults=t.defaults, **t.parts)  # type: ignore[arg-type]  # EMAIL/SMS
    try:
        put_template(ctx.db, workspace, t.id, body)
    except InvalidInput as exc:  # the content does not parse as a template
        member = f"{t.field}.{PART_MEMBERS.get(exc.field or '', exc.field or '')}"
        raise BadRequestException(f"{member}: {exc.message}") from None


def _state(ctx: Context, info: JourneyInfo, request: dict[str, Any]) -> str:
    if info.status == "paused" or info.status == "draft":  # a draft campaign is one created paused
        return "PAUSED"
    if info.status == "stopped":
        return "COMPLETED"
    workspace = _workspace(ctx)
    progress = counts.progress(ctx.db, workspace, info.id, info.active_version)
    frequency = (request.get("Schedule") or {}).get("Frequency") or "ONCE"
    if frequency == "ONCE":
        # its broadcast ran (a cohort recorded, maybe empty: customers a ONCE campaign reached before it was
        # changed are not sent to again) and nobody is left to send to
        ran = any(r.version == info.active_version for r in counts.version_runs(ctx.db, workspace, info.id))
        if ran and (progress.done or progress.pending == 0 and progress.entered == progress.finished):
            return "COMPLETED"
        return "EXECUTING" if ran else "SCHEDULED"
    if progress.entered > progress.finished:
        return "EXECUTING"
    # a recurring or event campaign is never done: it waits for its next run or event
    return "PENDING_NEXT_RUN" if progress.entered and frequency != "EVENT" else "SCHEDULED"


def _response(ctx: Context, info: JourneyInfo, request: dict[str, Any], version: int, modified: str,
              state: str, tags: dict[str, str]) -> dict[str, Any]:
    workspace = _workspace(ctx)
    response: dict[str, Any] = {
        k: v for k, v in request.items() if k not in ("tags", "AdditionalTreatments")}
    if request.get("AdditionalTreatments"):
        response["AdditionalTreatments"] = [
            {**t, "Id": str(i + 1), "State": {"CampaignStatus": state}}
            for i, t in enumerate(request["AdditionalTreatments"])]
    response.update({
        "ApplicationId": workspace.name, "Arn": f"{app_arn(workspace.name)}/campaigns/{info.id}", "Id": info.id,
        "CreationDate": info.created_at, "LastModifiedDate": modified, "Version": version,
        "IsPaused": bool(request.get("IsPaused")), "State": {"CampaignStatus": state},
        "DefaultState": {"CampaignStatus": state}, "tags": tags})
    return response


def campaign_response(ctx: Context, campaign_id: str) -> dict[str, Any]:
    workspace = _workspace(ctx)
    try:
        info = store.get_journey(ctx.db, workspace, campaign_id)
    except NotFound:
        raise NotFoundException("Resource not found") from None
    request = campaign_of(info.yaml)
    if request is None:  # a journey, not a campaign
        raise NotFoundException("Resource not found")
    modified = store.list_versions(ctx.db, workspace, campaign_id)[-1].created_at
    return _response(ctx, info, request, info.version, modified, _state(ctx, info, request),
                     get_tags(ctx.db, workspace.id, f"campaigns/{campaign_id}"))


async def _activate(ctx: Context, campaign_id: str) -> None:
    client = await ctx.app_state.temporal.client()
    await store.activate(client, ctx.db, _workspace(ctx), campaign_id, **ctx.app_state.settings.journey_queues())


@operation("CreateCampaign")
async def create_campaign_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    request = params["WriteCampaignRequest"]
    campaign_id = uuid.uuid4().hex  # Pinpoint's campaign ids are 32 hex digits
    tags = _tags(request)
    translated = await asyncio.to_thread(_translate, ctx, request, campaign_id)
    await asyncio.to_thread(_store, ctx, translated, campaign_id, tags)
    if not request.get("IsPaused"):
        await _activate(ctx, campaign_id)
    return {"CampaignResponse": await asyncio.to_thread(campaign_response, ctx, campaign_id)}


@operation("GetCampaign")
async def get_campaign_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"CampaignResponse": await asyncio.to_thread(campaign_response, ctx, params["CampaignId"])}


@operation("GetCampaigns")
async def get_campaigns_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    def listed() -> list[dict[str, Any]]:
        workspace = _workspace(ctx)
        return [campaign_response(ctx, j.id) for j in store.list_journeys(ctx.db, workspace)
                if campaign_of(store.get_journey(ctx.db, workspace, j.id).yaml) is not None]
    return {"CampaignsResponse": _page(await asyncio.to_thread(listed), "Id", params)}


@operation("DeleteCampaign")
async def delete_campaign_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    campaign_id = params["CampaignId"]
    response = await asyncio.to_thread(campaign_response, ctx, campaign_id)
    client = await ctx.app_state.temporal.client()
    workspace = _workspace(ctx)
    await store.delete_journey(client, ctx.db, workspace, campaign_id)

    def drop_templates() -> None:  # the campaign's own: what its inline messages became
        for t in list_templates(ctx.db, workspace):
            if t.id.startswith(f"campaign-{campaign_id}-"):
                delete_template(ctx.db, workspace, t.id)
    await asyncio.to_thread(drop_templates)
    response["State"] = response["DefaultState"] = {"CampaignStatus": "DELETED"}
    return {"CampaignResponse": response}


@operation("UpdateCampaign")
async def update_campaign_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A changed campaign is a new version (the journey's next one); its `tags` are not read (TagResource
    changes them, as UpdateSegment does not read them either). Unless it is paused, the new version is
    rolled out: its broadcast runs (a ONCE campaign still sends each customer once: those its earlier
    versions reached are turned away by the journey's entry limit), and a broadcast still waiting for its
    StartTime is replaced rather than joined."""
    campaign_id = params["CampaignId"]
    request = params["WriteCampaignRequest"]
    await asyncio.to_thread(campaign_response, ctx, campaign_id)  # NotFound unless it is a campaign of this application
    translated = await asyncio.to_thread(_translate, ctx, request, campaign_id)
    before = await asyncio.to_thread(store.get_journey, ctx.db, _workspace(ctx), campaign_id)
    info = await asyncio.to_thread(_store, ctx, translated, campaign_id)
    client = await ctx.app_state.temporal.client()
    workspace = _workspace(ctx)
    if request.get("IsPaused"):
        if info.status == "active":
            await store.pause(client, ctx.db, workspace, campaign_id)
    elif info.status == "draft" or info.version != info.active_version or info.status == "paused":
        if info.status == "paused":
            await store.resume(client, ctx.db, workspace, campaign_id)
        await _activate(ctx, campaign_id)
        if before.active_version and before.active_version != info.version:
            await store.withdraw_broadcast(client, ctx.db, workspace, campaign_id, before.active_version)
    return {"CampaignResponse": await asyncio.to_thread(campaign_response, ctx, campaign_id)}


def _versions(ctx: Context, campaign_id: str) -> list[dict[str, Any]]:
    current = campaign_response(ctx, campaign_id)
    workspace = _workspace(ctx)
    info = store.get_journey(ctx.db, workspace, campaign_id)
    ran = {r.version: r for r in counts.version_runs(ctx.db, workspace, campaign_id)}
    out = []
    for v in store.list_versions(ctx.db, workspace, campaign_id):
        request = campaign_of(v.yaml)
        if request is None:
            continue
        if v.version == info.version:
            state = current["State"]["CampaignStatus"]
        elif v.version in ran:  # a superseded version that ran: how its run went
            state = "COMPLETED" if counts.progress(ctx.db, workspace, campaign_id, v.version).done else "EXECUTING"
        else:  # superseded before it ran: it never will
            state = "COMPLETED"
        out.append(_response(ctx, info, request, v.version, v.created_at, state, current["tags"]))
    return out


@operation("GetCampaignVersions")
async def get_campaign_versions_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    versions = await asyncio.to_thread(_versions, ctx, params["CampaignId"])
    return {"CampaignsResponse": _page(versions, "Version", params)}


@operation("GetCampaignVersion")
async def get_campaign_version_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    check_version(params["Version"])
    versions = await asyncio.to_thread(_versions, ctx, params["CampaignId"])
    return {"CampaignResponse": version_of(versions, params["Version"])}


def _activities(ctx: Context, campaign_id: str) -> list[dict[str, Any]]:
    """One activity per run: each campaign version that admitted customers. Its counts are the journey's: TotalEndpointCount the customers it reached, SuccessfulEndpointCount
    the messages sent."""
    campaign_response(ctx, campaign_id)
    workspace = _workspace(ctx)
    out = []
    for run in counts.version_runs(ctx.db, workspace, campaign_id):
        if not run.admitted:  # its broadcast turned everybody away (sent to already): nothing ran
            continue
        p = counts.progress(ctx.db, workspace, campaign_id, run.version)
        request = campaign_of(store.list_versions(ctx.db, workspace, campaign_id)[run.version - 1].yaml) or {}
        start = (request.get("Schedule") or {}).get("StartTime")
        activity: dict[str, Any] = {
            "ApplicationId": workspace.name, "CampaignId": campaign_id, "Id": activity_id(campaign_id, run.version),
            "ScheduledStart": ms_to_iso(run.first_cohort_at) if start in (None, "IMMEDIATE") else start,
            "Start": ms_to_iso(run.first_cohort_at), "State": "COMPLETED" if p.done else "EXECUTING",
            "TotalEndpointCount": p.total, "SuccessfulEndpointCount": p.sent, "TreatmentId": "0",
            "ExecutionMetrics": {"ENDPOINTS_ENTERED": str(p.entered), "MESSAGES_SENT": str(p.sent),
                                 "MESSAGES_FAILED": str(p.failed), "MESSAGES_RETRYING": str(p.retrying)}}
        if p.done:
            activity["Result"] = "SUCCESS" if not p.failed else "PARTIAL"
            activity["End"] = ms_to_iso(run.last_run_update_at or run.last_cohort_at)
        out.append(activity)
    return out


@operation("GetCampaignActivities")
async def get_campaign_activities_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    activities = await asyncio.to_thread(_activities, ctx, params["CampaignId"])
    return {"ActivitiesResponse": _page(activities, "Id", params)}
