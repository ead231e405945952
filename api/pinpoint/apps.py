"""Applications: a Pinpoint application is a Tidings workspace, and its ApplicationId is the workspace name.
A workspace's key sees its own workspace only (dispatch answers NotFoundException for any other
ApplicationId); an admin key sees every workspace and may create them."""
from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine

from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException
from tidings.engine.journeys.store import stop_all
from tidings.engine.platform.clock import ms_to_iso
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.workspaces.service import (
    WorkspaceRef,
    create_workspace,
    created_at,
    delete_workspace,
    list_workspaces,
)
from tidings.engine.workspaces.tags import get_tags

ACCOUNT = "000000000000"  # no AWS account behind a Tidings deployment; ARNs carry this placeholder
REGION = "tidings"


def app_arn(app_id: str) -> str:
    return f"arn:aws:mobiletargeting:{REGION}:{ACCOUNT}:apps/{app_id}"


def _application(db: Engine, workspace: WorkspaceRef, tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {"Arn": app_arn(workspace.name), "Id": workspace.name, "Name": workspace.name,
            "CreationDate": ms_to_iso(created_at(db, workspace)),
            "tags": get_tags(db, workspace.id, "app") if tags is None else tags}


@operation("GetApps")
async def get_apps(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A workspace's key sees its workspace; an admin key every workspace (one page: no paging yet)."""
    def listed() -> list[dict[str, Any]]:
        reachable = list_workspaces(ctx.db) if ctx.admin else [ctx.workspace]
        return [_application(ctx.db, workspace) for workspace in reachable if workspace is not None]
    return {"ApplicationsResponse": {"Item": await asyncio.to_thread(listed)}}


@operation("GetApp")
async def get_app(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"ApplicationResponse": await asyncio.to_thread(_application, ctx.db, ctx.workspace)}


@operation("CreateApp")
async def create_app(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Admin keys only (dispatch): a new workspace, whose name is the new ApplicationId."""
    request = params["CreateApplicationRequest"]
    name = request["Name"]
    if not 1 <= len(name) <= 100 or "/" in name:
        raise BadRequestException("CreateApplicationRequest.Name: 1-100 characters, no '/' (it becomes the "
                                  "ApplicationId and the workspace name)")

    def created() -> dict[str, Any]:
        try:
            return _application(ctx.db, create_workspace(ctx.db, name, tags=request.get("tags")))
        except InvalidInput as exc:
            raise BadRequestException(f"CreateApplicationRequest.{exc.field}: {exc.message}") from None
    return {"ApplicationResponse": await asyncio.to_thread(created)}


@operation("DeleteApp")
async def delete_app(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Admin keys only (dispatch): the workspace's journeys are stopped (Temporal first, so nothing of it
    runs on), then the workspace and everything in it are deleted in one transaction; its keys stop working.
    Answers with the application as it was."""
    assert ctx.workspace is not None  # ApplicationId is a required label: dispatch found it, or NotFound
    answer = await asyncio.to_thread(_application, ctx.db, ctx.workspace)
    client = await ctx.app_state.temporal.client()  # unreachable Temporal: refused before anything changes
    await stop_all(client, ctx.db, ctx.workspace)
    await asyncio.to_thread(delete_workspace, ctx.db, ctx.workspace)
    return {"ApplicationResponse": answer}


async def _settings(ctx: Context) -> dict[str, Any]:
    created = await asyncio.to_thread(created_at, ctx.db, ctx.workspace)
    # No workspace-wide limits or quiet time exist: each journey states its own (docs/journeys.md), so the
    # application's defaults are empty, as a new Pinpoint application's are.
    return {"ApplicationId": ctx.workspace.name, "LastModifiedDate": ms_to_iso(created), "Limits": {},
            "QuietTime": {}, "CampaignHook": {}}


@operation("GetApplicationSettings")
async def get_application_settings(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"ApplicationSettingsResource": await _settings(ctx)}


@operation("UpdateApplicationSettings")
async def update_application_settings(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Refused for each setting Tidings would not apply, rather than stored and ignored."""
    request = params.get("WriteApplicationSettingsRequest", {})
    unapplied = {"QuietTime": "set quiet_hours in each journey's YAML (docs/journeys.md)",
                 "JourneyLimits": "set the caps in each journey's YAML (docs/journeys.md)",
                 "Limits": "Tidings has no campaigns; journeys state their own caps",
                 "CampaignHook": "Tidings has no campaigns",
                 "CloudWatchMetricsEnabled": "Tidings exports no CloudWatch metrics",
                 "EventTaggingEnabled": "Tidings does not tag events"}
    for field, why in unapplied.items():
        if request.get(field) not in (None, {}, False):
            raise BadRequestException(f"WriteApplicationSettingsRequest.{field}: not applied by Tidings "
                                      f"(workspaces have no such default); {why}")
    return {"ApplicationSettingsResource": await _settings(ctx)}
