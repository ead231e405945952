"""Segments: a Pinpoint segment is a native segment (same id, name and versions). Its Dimensions and
SegmentGroups are stored as the native JsonLogic rule they translate to (tidings.engine.segments.pinpoint_dimensions),
so it reads back through /v1/segments, and a native segment whose rule has a Pinpoint form reads back here
(one that has none is answered without Dimensions). Imported (static) segments are SegmentType IMPORT."""
from __future__ import annotations

import asyncio
from typing import Any

from tidings.api.pinpoint.apps import app_arn
from tidings.api.pinpoint.dispatch import Context, operation
from tidings.api.pinpoint.errors import BadRequestException, NotFoundException
from tidings.engine.platform.errors import InvalidInput
from tidings.engine.segments.pinpoint_dimensions import rule_segment, segment_rule
from tidings.engine.segments.service import (
    SegmentIn,
    SegmentPatch,
    create_segment,
    delete_segment,
    get_segment,
    list_segments,
    list_versions,
    segment_exists,
    update_segment,
)
from tidings.engine.workspaces.tags import get_tags, tags_for

MAX_PAGE = 100


def _response(app_id: str, segment_id: str, kind: str, name: str, rule: Any, version: int, created: str,
              modified: str, tags: dict[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "ApplicationId": app_id, "Arn": f"{app_arn(app_id)}/segments/{segment_id}", "Id": segment_id,
        "Name": name, "CreationDate": created, "LastModifiedDate": modified, "Version": version, "tags": tags,
        "SegmentType": "IMPORT" if kind == "static" else "DIMENSIONAL"}
    definition = rule_segment(rule) if kind == "dynamic" else None
    if definition is not None:
        response.update(definition)
    return response


def _segment(ctx: Context, segment_id: str) -> dict[str, Any]:
    seg = get_segment(ctx.db, ctx.workspace, segment_id)
    return _response(ctx.workspace.name, seg.id, seg.kind, seg.name, seg.rule, seg.version, seg.created_at,
                     seg.updated_at, get_tags(ctx.db, ctx.workspace.id, f"segments/{seg.id}"))


def _rule(ctx: Context, request: dict[str, Any]) -> Any:
    """The native rule of a WriteSegmentRequest; each source segment must exist in the workspace."""
    for i, group in enumerate((request.get("SegmentGroups") or {}).get("Groups") or []):
        for j, ref in enumerate(group.get("SourceSegments") or []):
            if not segment_exists(ctx.db, ctx.workspace.id, ref["Id"]):
                raise BadRequestException(f"SegmentGroups.Groups[{i}].SourceSegments[{j}].Id: no segment "
                                          f"{ref['Id']!r} in this application")
    return segment_rule(request.get("Dimensions"), request.get("SegmentGroups"))


def _check_write(request: dict[str, Any]) -> None:
    """`tags` are stored by CreateSegment and not read by UpdateSegment (Pinpoint deprecated them on updates:
    TagResource changes them)."""
    if "Name" in request and not 1 <= len(request["Name"].strip()) <= 255:
        raise BadRequestException("WriteSegmentRequest.Name: 1-255 characters")


@operation("CreateSegment")
async def create_segment_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    request = params["WriteSegmentRequest"]
    _check_write(request)
    if not request.get("Name"):
        raise BadRequestException("WriteSegmentRequest.Name: a segment needs a name")

    def created() -> dict[str, Any]:
        try:
            seg = create_segment(ctx.db, ctx.workspace, SegmentIn(name=request["Name"], rule=_rule(ctx, request)),
                                 tags=request.get("tags"))
        except InvalidInput as exc:
            if not (exc.field or "").startswith("tags"):
                raise
            raise BadRequestException(f"WriteSegmentRequest.{exc.field}: {exc.message}") from None
        return _segment(ctx, seg.id)
    return {"SegmentResponse": await asyncio.to_thread(created)}


@operation("UpdateSegment")
async def update_segment_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A new version when the name or definition changes. Dimensions and SegmentGroups replace the
    definition together (as in Pinpoint); a request with neither keeps it."""
    request = params["WriteSegmentRequest"]
    _check_write(request)

    def updated() -> dict[str, Any]:
        current = get_segment(ctx.db, ctx.workspace, params["SegmentId"])
        patch = SegmentPatch()
        if request.get("Name"):
            patch.name = request["Name"]
        if "Dimensions" in request or "SegmentGroups" in request:
            if current.kind == "static":
                raise BadRequestException("WriteSegmentRequest.Dimensions: an imported segment's members are "
                                          "the imported customers; it has no dimensions to set")
            patch.rule = _rule(ctx, request)
        update_segment(ctx.db, ctx.workspace, current.id, patch)
        return _segment(ctx, current.id)
    return {"SegmentResponse": await asyncio.to_thread(updated)}


@operation("GetSegment")
async def get_segment_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"SegmentResponse": await asyncio.to_thread(_segment, ctx, params["SegmentId"])}


@operation("DeleteSegment")
async def delete_segment_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    def deleted() -> dict[str, Any]:
        response = _segment(ctx, params["SegmentId"])
        delete_segment(ctx.db, ctx.workspace, params["SegmentId"])
        return response
    return {"SegmentResponse": await asyncio.to_thread(deleted)}


def check_version(value: str) -> None:
    """The `Version` path member of Get*Version: a number, refused before anything is read."""
    if not value.isdigit():
        raise BadRequestException(f"Version: a version number, got {value!r}")


def version_of(versions: list[dict[str, Any]], value: str) -> dict[str, Any]:
    """The response of one version among a resource's versions (each with its `Version` number)."""
    found = [v for v in versions if v["Version"] == int(value)]
    if not found:
        raise NotFoundException("Resource not found")
    return found[0]


def _page(items: list[dict[str, Any]], key: str, params: dict[str, Any]) -> dict[str, Any]:
    """One page of `items` (in `key` order) after the Token (the last key of the previous page)."""
    size = params.get("PageSize") or str(MAX_PAGE)
    if not size.isdigit() or not 1 <= int(size) <= MAX_PAGE:
        raise BadRequestException(f"PageSize: a number from 1 to {MAX_PAGE}, got {size!r}")
    items = sorted(items, key=lambda item: item[key])  # the Token compares in this order, whatever the collation
    token = params.get("Token")
    if token:
        items = [item for item in items if str(item[key]) > token] if key == "Id" else \
            [item for item in items if token.isdigit() and item[key] > int(token)]
    page = items[:int(size)]
    out: dict[str, Any] = {"Item": page}
    if len(items) > len(page):
        out["NextToken"] = str(page[-1][key])
    return out


@operation("GetSegments")
async def get_segments_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    def listed() -> list[dict[str, Any]]:
        found = list_segments(ctx.db, ctx.workspace)
        tags = tags_for(ctx.db, ctx.workspace.id, [f"segments/{s.id}" for s in found])
        return [_response(ctx.workspace.name, s.id, s.kind, s.name, s.rule, s.version, s.created_at, s.updated_at,
                          tags.get(f"segments/{s.id}", {})) for s in found]
    return {"SegmentsResponse": _page(await asyncio.to_thread(listed), "Id", params)}


def _versions(ctx: Context, segment_id: str) -> list[dict[str, Any]]:
    seg = get_segment(ctx.db, ctx.workspace, segment_id)
    tags = get_tags(ctx.db, ctx.workspace.id, f"segments/{seg.id}")
    return [_response(ctx.workspace.name, seg.id, seg.kind, v.name, v.rule, v.version, seg.created_at, v.created_at,
                      tags) for v in list_versions(ctx.db, ctx.workspace, segment_id)]


@operation("GetSegmentVersions")
async def get_segment_versions_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    versions = await asyncio.to_thread(_versions, ctx, params["SegmentId"])
    return {"SegmentsResponse": _page(versions, "Version", params)}


@operation("GetSegmentVersion")
async def get_segment_version_op(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    check_version(params["Version"])
    versions = await asyncio.to_thread(_versions, ctx, params["SegmentId"])
    return {"SegmentResponse": version_of(versions, params["Version"])}
