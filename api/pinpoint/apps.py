"""Applications: a Pinpoint application is a Tidings workspace, and its ApplicationId is the workspace name.
A key sees its own workspace only (dispatch answers NotFoundException for any other ApplicationId)."""
from __future__ import annotations

import asyncio
from typing import Any

from api.pinpoint.dispatch import Context, operation
from api.pinpoint.errors import BadRequestException
from engine.platform.clock import ms_to_iso
from engine.workspaces.service import created_at

ACCOUNT = "000000000000"  # no AWS account behind a Tidings deployment; ARNs carry this placeholder
REGION = "tidings"


def app_arn(app_id: str) -> str:
    return f"arn:aws:mobiletargeting:{REGION}:{ACCOUNT}:apps/{app_id}"


async def _application(ctx: Context) -> dict[str, Any]:
    created = await asyncio.to_thread(created_at, ctx.db, ctx.workspace)
    name = ctx.workspace.name
    return {"Arn": app_arn(name), "Id": name, "Name": name, "CreationDate": ms_to_iso(created), "tags": {}}


@operation("GetApps")
async def get_apps(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"ApplicationsResponse": {"Item": [await _application(ctx)]}}


@operation("GetApp")
async def get_app(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"ApplicationResponse": await _application(ctx)}


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
