"""Engagement metrics (KPIs): GetApplicationDateRangeKpi, GetJourneyDateRangeKpi and GetCampaignDateRangeKpi, computed by
tidings.engine.analytics.kpis from the message events. The date range is inclusive (Pinpoint's words); without
one it is the 31 days before now, as Pinpoint does. Tidings does not cap the range at 31 days nor its start at 90
days ago: it keeps its events for as long as retention says (docs/pinpoint.md, "KPIs")."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tidings.api.pinpoint.campaigns import campaign_response
from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException
from tidings.engine.analytics import kpis
from tidings.engine.journeys import store
from tidings.engine.journeys.pinpoint.campaigns import campaign_of

DEFAULT_RANGE = timedelta(days=31)


def _instant(member: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequestException(f"{member}: an ISO 8601 date and time such as 2026-12-03T20:00:00Z, "
                                  f"got {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def date_range(params: dict[str, Any]) -> tuple[datetime, datetime]:
    end = _instant("EndTime", params["EndTime"]) if params.get("EndTime") else datetime.now(UTC)
    start = _instant("StartTime", params["StartTime"]) if params.get("StartTime") else end - DEFAULT_RANGE
    if start > end:
        raise BadRequestException(f"StartTime: {_iso(start)} is after EndTime {_iso(end)}")
    return start, end


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _until_ms(end: datetime) -> int:
    """The first millisecond after the inclusive end: a whole-second end (what SDKs send) covers its second."""
    return _ms(end) + (1000 if end.microsecond == 0 else 1)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds").replace("+00:00", "Z")


def _result(rows: list[kpis.Row]) -> dict[str, Any]:
    return {"Rows": [{"GroupedBys": [{"Key": k, "Type": "String", "Value": v} for k, v in row.grouped_by],
                      "Values": [{"Key": k, "Type": "Double", "Value": repr(v)} for k, v in row.values]}
                     for row in rows]}


def _campaign_ids(ctx: Context) -> list[str]:
    """The application's campaigns: the journeys made by CreateCampaign (api/pinpoint/campaigns.py)."""
    return [j.id for j in store.list_journeys(ctx.db, ctx.workspace)
            if campaign_of(store.get_journey(ctx.db, ctx.workspace, j.id).yaml) is not None]


async def _compute(ctx: Context, params: dict[str, Any], journey_id: str | None,
                   context: str | None = None) -> tuple[datetime, datetime, dict]:
    context = context or ("application" if journey_id is None else "journey")
    query = kpis.resolve(params["KpiName"], context)  # a wrong name before anything is read
    start, end = date_range(params)
    if context == "journey":
        await asyncio.to_thread(store.get_journey, ctx.db, ctx.workspace, journey_id)  # NotFound for another id
    elif context == "campaign":
        await asyncio.to_thread(campaign_response, ctx, journey_id)  # NotFound for another id, or a journey's
    campaigns = await asyncio.to_thread(_campaign_ids, ctx) if query.group in kpis.CAMPAIGN_GROUPS else []
    rows = await asyncio.to_thread(kpis.compute, ctx.db, ctx.workspace, params["KpiName"], since_ms=_ms(start),
                                   until_ms=_until_ms(end), journey_id=journey_id, context=context,
                                   campaign_ids=campaigns)
    return start, end, _result(rows)


@operation("GetApplicationDateRangeKpi")
async def application_kpi_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    start, end, result = await _compute(ctx, params, None)
    return {"ApplicationDateRangeKpiResponse": {
        "ApplicationId": ctx.workspace.name, "KpiName": params["KpiName"], "StartTime": _iso(start),
        "EndTime": _iso(end), "KpiResult": result}}


@operation("GetJourneyDateRangeKpi")
async def journey_kpi_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    start, end, result = await _compute(ctx, params, params["JourneyId"])
    return {"JourneyDateRangeKpiResponse": {
        "ApplicationId": ctx.workspace.name, "JourneyId": params["JourneyId"], "KpiName": params["KpiName"],
        "StartTime": _iso(start), "EndTime": _iso(end), "KpiResult": result}}


@operation("GetCampaignDateRangeKpi")
async def campaign_kpi_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A campaign is a broadcast journey of the same id (api/pinpoint/campaigns.py): its KPIs are that journey's
    messages, named as Pinpoint names the campaign metrics."""
    start, end, result = await _compute(ctx, params, params["CampaignId"], context="campaign")
    return {"CampaignDateRangeKpiResponse": {
        "ApplicationId": ctx.workspace.name, "CampaignId": params["CampaignId"], "KpiName": params["KpiName"],
        "StartTime": _iso(start), "EndTime": _iso(end), "KpiResult": result}}
